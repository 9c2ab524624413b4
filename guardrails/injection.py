"""Heuristics for prompt injection in English and Spanish.

Matching runs on a normalized copy (lower case, accents removed, whitespace collapsed) so
"Olvida   las INSTRUCCIONES" is caught; the rules want an instruction-shaped phrase, so
"ignore my previous message" is not flagged.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import regex

_RULES: dict[str, str] = {
    "ignore_instructions": (
        r"\b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,30}\b(previous|prior|above|"
        r"earlier|all|your|the|system)\b[^.\n]{0,20}\b(instructions?|rules|prompts?|"
        r"guidelines|directives)\b"
    ),
    "ignore_instructions_es": (
        r"\b(ignora|olvida|omite|desobedece|salta(te)?)\b[^.\n]{0,30}\b(las|tus|todas|"
        r"anteriores|previas)\b[^.\n]{0,30}\b(instrucciones|reglas|indicaciones|normas)\b"
    ),
    "reveal_prompt": (
        r"\b(reveal|show|print|repeat|output|tell me|display|leak)\b[^.\n]{0,30}\b(your|the)\b"
        r"[^.\n]{0,15}\b(system prompt|initial prompt|hidden (instructions|prompt)|"
        r"instructions you (were|have been) given)\b"
    ),
    "reveal_prompt_es": (
        r"\b(muestra(me)?|revela(me)?|dime|imprime|repite)\b[^.\n]{0,30}\b(tu|tus|el|las)\b"
        r"[^.\n]{0,15}\b(prompt( de sistema| del sistema)?|instrucciones (ocultas|"
        r"del sistema|iniciales))\b"
    ),
    "new_persona": (
        r"\b(you are now|from now on,? you are|pretend (to be|you are)|act as if you have no|"
        r"jailbreak|developer mode|\bdan\b mode|do anything now)\b"
    ),
    "new_persona_es": (
        r"\b(a partir de ahora eres|ahora eres|finge (ser|que eres)|modo desarrollador|"
        r"sin restricciones)\b"
    ),
    "role_marker": (
        r"(^|\n)\s*(system|assistant|sistema)\s*:\s*\S|<\|?im_start\|?>|\[/?inst\]|<</?sys>>|"
        r"<\|(start_header_id|end_header_id|eot_id|begin_of_text)\|>|(^|\n)\s*#{2,}\s*system\b"
    ),
}
_COMPILED = {name: regex.compile(rx) for name, rx in _RULES.items()}


@dataclass(frozen=True)
class InjectionFinding:
    rule: str  # which heuristic matched; never a copy of the text


def normalize(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return regex.sub(r"[ \t]+", " ", stripped.lower())


def detect_injection(text: str) -> InjectionFinding | None:
    normalized = normalize(text)
    for name, rule in _COMPILED.items():
        if rule.search(normalized):
            return InjectionFinding(rule=name.removesuffix("_es"))
    return None
