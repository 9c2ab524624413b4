"""Prompt-injection heuristics for English and Spanish chat messages (OWASP LLM01, LLM07).

Heuristics, not a classifier: they catch the common phrasings ("ignore all previous
instructions", "olvida las instrucciones anteriores", "reveal your system prompt") and the
fake role markers a user types to forge a turn. Each rule names what it targets (instructions,
rules, *your* prompt), so ordinary sentences such as "ignore my previous message" or
"the system: Windows 11" do not fire.

Matching runs on a folded copy of the text: compatibility-decomposed, accents and invisible
format characters dropped, common Cyrillic/Greek look-alikes mapped to Latin, case-folded and
whitespace collapsed, so "IGNORÁ   las instrucciones" and "ign\u200bore previous instructions"
match like their plain forms. A finding names the rule and never copies the text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from llm.llama3 import neutralize

Kind = Literal["override", "persona", "prompt_leak", "role_marker"]
Language = Literal["en", "es", "any"]


@dataclass(frozen=True, slots=True)
class InjectionFinding:
    """Which rule matched. Holds no part of the message, so it is safe to log."""

    rule: str
    kind: Kind
    language: Language


# -- folding -------------------------------------------------------------------------------

# Letters that look Latin in most fonts; attackers swap them in to dodge keyword filters.
_CONFUSABLES = str.maketrans(
    # Cyrillic a e o p c y x i j s d, Latin script g, Armenian n, Greek v o a i k t e p;
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501"
    "\u0261\u0578\u03bd\u03bf\u03b1\u03b9\u03ba\u03c4\u03b5\u03c1"
    # then curly and modifier apostrophes and the backtick; Unicode line breaks and CR.
    "\u2018\u2019\u02bc`\u2028\u2029\r",
    "aeopcyxijsdgnvoaiktep''''\n\n\n",
)
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_NON_WORD = re.compile(r"[\W_]+")


def fold_lines(text: str) -> str:
    """Accent-, case- and look-alike-insensitive text that keeps its line breaks."""
    decomposed = unicodedata.normalize("NFKD", text)
    # Mn: the accents NFKD split off; Cf: zero-width spaces, soft hyphens, BOMs and the
    # like, which split a keyword without showing (llama3.neutralize inserts one, too).
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Cf"))
    return _INLINE_SPACE.sub(" ", kept.casefold().translate(_CONFUSABLES))


def fold_words(lines: str) -> str:
    """`fold_lines` output as bare words between single spaces; "you're" becomes "youre".

    Padded with a space at each end so that rules can anchor on " word " boundaries.
    """
    return " " + " ".join(_NON_WORD.sub(" ", lines.replace("'", "")).split()) + " "


# -- phrase rules (on fold_words: single spaces, no punctuation) --------------------------

_EN_IGNORE = r"(?:ignore|disregard|forget|skip|override|bypass|abandon|drop)"
_EN_RULES = (
    r"(?:instructions?|prompts?|rules|guidelines|directives?|directions|programming"
    r"|guardrails|restrictions|constraints|commands)"
)
_EN_EARLIER = (
    r"(?:previous|prior|above|earlier|preceding|former|original|initial|system|safety"
    r"|existing|given)"
)
_EN_LEAK_VERB = (
    r"(?:reveal|print|show|display|output|repeat|recite|echo|dump|leak|expose|share|disclose"
    r"|tell|give|write out|spell out|copy|paste)"
)
_EN_SYSTEM_PROMPT = (
    r"(?:system (?:prompt|instructions)|(?:initial|original|hidden|secret|developer) "
    r"(?:prompt|instructions)|pre ?prompt|meta ?prompt)"
)
_EN_JAILBROKEN = (
    r"(?:dan|stan|jailbroken|unfiltered|uncensored|unrestricted|unchained|free from"
    r"|in (?:developer|god|dan|jailbreak|unrestricted) mode)"
)
# "tell me your instructions for the VPN set-up" asks for a how-to, not for the prompt.
_NOT_A_TOPIC = r"(?!(?:for|on|about|to|how|regarding|para|de|del|sobre|acerca|en|con) )"

_ES_IGNORE = (
    r"(?:olvida|olvidate de|olvidad|ignora|ignore|ignorad|descarta|omite|saltate|pasa de"
    r"|no hagas caso (?:a|de)|haz caso omiso (?:a|de))"
)
_ES_FILLER = r"(?:(?:todas|todos|todo|toda|las|los|tus|sus|de|del|el|la|esas|estas|lo) ){0,3}"
_ES_RULES = (
    r"(?:instrucciones|indicaciones|reglas|ordenes|normas|directrices|restricciones|pautas"
    r"|consignas)"
)
_ES_EARLIER = (
    r"(?:anteriores|previas|precedentes|de arriba|originales|iniciales|del sistema"
    r"|de sistema|que te (?:dieron|han dado|dio))"
)
_ES_LEAK_VERB = (
    r"(?:muestra|muestrame|ensena|ensename|dime|di|revela|revelame|imprime|repite|repiteme"
    r"|escribe|escribeme|copia|dame|comparte|lista)"
)
_ES_SYSTEM_PROMPT = (
    r"(?:(?:tu|tus|el|su|sus) (?:prompt|instrucciones) (?:de sistema|del sistema"
    r"|inicial(?:es)?|original(?:es)?|ocult[ao]s?|secret[ao]s?)|tu mensaje del? sistema"
    rf"|tu prompt|tus instrucciones {_NOT_A_TOPIC}|(?:el|tu) system prompt)"
)

# (rule, kind, language, pattern). Patterns are bounded ({0,3}, single optional words) so a
# 40,000-character message is scanned in linear time.
_PHRASES: tuple[tuple[str, Kind, Language, str], ...] = (
    # "ignore all previous instructions", "disregard the instructions above"
    (
        "ignore_previous_instructions",
        "override",
        "en",
        rf" {_EN_IGNORE} (?:(?:all|any|of|the|your|these|those|every) ){{0,3}}"
        rf"(?:(?:{_EN_EARLIER} ){{1,2}}{_EN_RULES}|{_EN_RULES} (?:above|before this"
        r"|you were given|you have been given|given to you)) ",
    ),
    # "disregard your rules", "forget your programming": *your* rules, not the user's own
    (
        "disregard_your_rules",
        "override",
        "en",
        rf" {_EN_IGNORE} (?:(?:all|any|of|every) ){{0,2}}(?:your|the systems?) (?:\w+ )?"
        rf"{_EN_RULES} ",
    ),
    (
        "new_instructions",
        "override",
        "en",
        r" your (?:new|real|actual|true|updated) (?:instructions|rules|system prompt|task"
        r"|purpose|role) (?:are|is) ",
    ),
    (
        "reveal_system_prompt",
        "prompt_leak",
        "en",
        rf" {_EN_LEAK_VERB}(?: me| us)? (?:(?:your|the|its|all|of|entire|full|whole|complete"
        rf"|exact|verbatim) ){{0,4}}{_EN_SYSTEM_PROMPT} ",
    ),
    (
        "reveal_your_instructions",
        "prompt_leak",
        "en",
        rf" {_EN_LEAK_VERB}(?: me| us)? (?:(?:all|of|entire|full|whole|complete|exact) ){{0,3}}"
        r"your (?:\w+ )?(?:prompt|instructions|system message|rules|guidelines|directives)"
        rf" {_NOT_A_TOPIC}",
    ),
    (
        "what_are_your_instructions",
        "prompt_leak",
        "en",
        r" (?:(?:what (?:is|was|are|were)|whats) your (?:\w+ )?(?:system prompt|prompt"
        rf"|instructions|directives|system message) {_NOT_A_TOPIC}|what (?:were|have) you"
        r" been (?:told|instructed) )",
    ),
    (
        "repeat_text_above",
        "prompt_leak",
        "en",
        r" (?:repeat|print|output|recite) (?:(?:all|everything|the|text|words|of|every|word"
        r"|content|message|messages|verbatim) ){1,4}(?:above|before this|so far) ",
    ),
    (
        "jailbreak_persona",
        "persona",
        "en",
        rf" (?:(?:you are|youre) now (?:an? )?{_EN_JAILBROKEN}|(?:act|behave|respond|answer)"
        rf" as (?:an? )?{_EN_JAILBROKEN}|(?:dan|developer|god|jailbreak) mode (?:enabled"
        r"|activated|on)|enable (?:dan|developer|god|jailbreak) mode|do anything now"
        r"|(?:you are|youre) no longer (?:an? )?(?:ai|assistant|parley|bound|restricted"
        r"|limited|chatbot|language model)) ",
    ),
    (
        "from_now_on_you_are",
        "persona",
        "en",
        r" from now on (?:you are|youre|you will (?:act|be|respond|answer|only)|you must"
        r" (?:act|answer|respond)|act as) ",
    ),
    (
        "pretend_you_are",
        "persona",
        "en",
        r" (?:pretend (?:that )?(?:you are|youre|to be)|act as if you (?:have no|had no"
        r"|were not|werent|are not|arent)) ",
    ),
    (
        "es_olvida_instrucciones_anteriores",
        "override",
        "es",
        rf" {_ES_IGNORE} {_ES_FILLER}(?:{_ES_RULES} {_ES_EARLIER}|(?:anteriores|previas)"
        rf" {_ES_RULES}) ",
    ),
    (
        "es_ignora_tus_reglas",
        "override",
        "es",
        rf" {_ES_IGNORE} (?:(?:todas|todo|de) ){{0,2}}(?:tus|sus) (?:\w+ )?{_ES_RULES} ",
    ),
    (
        "es_muestra_prompt_de_sistema",
        "prompt_leak",
        "es",
        rf" (?:{_ES_LEAK_VERB} (?:(?:cual|cuales|es|son|todo|todas|todos|completo|exactamente"
        rf"|me) ){{0,3}}{_ES_SYSTEM_PROMPT}(?= )"
        rf"|cuales (?:son|eran) tus instrucciones {_NOT_A_TOPIC}"
        r"|cual es tu (?:prompt|mensaje) (?:de sistema|del sistema|inicial|original)"
        r"|que instrucciones (?:tienes|te (?:dieron|han dado)))",
    ),
    (
        "es_a_partir_de_ahora_eres",
        "persona",
        "es",
        r" (?:a partir de ahora|desde ahora(?: en adelante)?|de ahora en adelante) (?:tu )?"
        r"(?:eres|seras|vas a ser|actuaras|actua como|actuas como|te llamas"
        r"|responderas como) ",
    ),
    (
        "es_persona_sin_restricciones",
        "persona",
        "es",
        r" (?:(?:ahora )?eres dan|eres (?:un|una) (?:ia|asistente|modelo) sin (?:restricciones"
        r"|filtros|reglas|limites)|modo (?:dan|desarrollador|sin restricciones|jailbreak)"
        r"|finge (?:que )?(?:eres|ser|seas)|haz como si (?:fueras|no tuvieras)"
        r"|ya no eres (?:un |una )?(?:ia|asistente|parley|modelo)) ",
    ),
)

# -- role markers (on fold_lines: line breaks kept) ----------------------------------------

_LINE_START = r"^[ >*_'#-]*"
# Template syntax of other model families; Llama 3's own tokens are found by neutralize().
_FOREIGN_TEMPLATE = re.compile(r"\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>")
_ROLE_HEADER = re.compile(
    r"^[ >*_']*#{2,} ?(?:system|instructions?|response|assistant|human|user|input|sistema"
    r"|instrucciones|respuesta|asistente|usuario) ?:?[ *_]*$",
    re.MULTILINE,
)
# "System: ..." forges a turn only when what follows addresses the assistant; a pasted
# "System: Windows 11" or "System: you have 3 new messages" does not.
_SYSTEM_LINE = re.compile(
    _LINE_START + r"(?:system|sistema)(?: (?:message|prompt|note|override|update))? ?:"
    r"(?P<rest>[^\n]*)(?:\n(?P<next>[^\n]*))?",
    re.MULTILINE,
)
_DIRECTIVE = re.compile(
    r" (?:you are|youre|you must|you will|you should|from now on|new instructions|ignore"
    r"|disregard|override|assistant|eres|debes|a partir de ahora|ignora|olvida"
    r"|instrucciones|nuevas instrucciones) "
)
_ASSISTANT_LINE = re.compile(_LINE_START + r"(?:assistant|asistente) ?:(?P<rest>[^\n]*)", re.M)
_USER_LINE = re.compile(_LINE_START + r"(?:user|human|usuario|humano) ?:", re.MULTILINE)
_COMPLIANCE = re.compile(
    r" (?:sure|ok|okay|certainly|of course|absolutely|yes|i will|ill|here is|heres|as dan"
    r"|claro|por supuesto|de acuerdo|vale|si|aqui tienes|aqui esta) "
)


def _control_tokens(lines: str) -> bool:
    return neutralize(lines) != lines or _FOREIGN_TEMPLATE.search(lines) is not None


def _role_header(lines: str) -> bool:
    return _ROLE_HEADER.search(lines) is not None


def _system_line(lines: str) -> bool:
    for match in _SYSTEM_LINE.finditer(lines):
        said = match["rest"] if match["rest"].strip() else (match["next"] or "")
        if _DIRECTIVE.search(fold_words(said)):
            return True
    return False


def _assistant_line(lines: str) -> bool:
    # A forged transcript ("User: ... / Assistant: ...") or a forged turn that complies.
    for match in _ASSISTANT_LINE.finditer(lines):
        if _USER_LINE.search(lines) or _COMPLIANCE.match(fold_words(match["rest"])):
            return True
    return False


_MARKERS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("chat_template_tokens", _control_tokens),
    ("fake_role_header", _role_header),
    ("fake_system_turn", _system_line),
    ("fake_assistant_turn", _assistant_line),
)


@dataclass(frozen=True, slots=True)
class _Phrase:
    name: str
    kind: Kind
    language: Language
    pattern: re.Pattern[str]


_PHRASE_RULES = tuple(
    _Phrase(name, kind, language, re.compile(pattern)) for name, kind, language, pattern in _PHRASES
)

RULES: frozenset[str] = frozenset(
    [name for name, _ in _MARKERS] + [rule.name for rule in _PHRASE_RULES]
)


def detect_injection(text: str) -> InjectionFinding | None:
    """The first injection rule that `text` matches, or None."""
    lines = fold_lines(text)
    for name, test in _MARKERS:
        if test(lines):
            return InjectionFinding(name, "role_marker", "any")
    words = fold_words(lines)
    for rule in _PHRASE_RULES:
        if rule.pattern.search(words):
            return InjectionFinding(rule.name, rule.kind, rule.language)
    return None
