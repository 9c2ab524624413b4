"""The labeled helpdesk set: the issue's quality targets hold (the benchmark prints the
full table: .venv/bin/python -m bench.redaction)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.redaction import TARGETS, Labeled, Quality, evaluate, load_labeled
from privacy.analyzer import PersonalDataAnalyzer


@pytest.fixture(scope="module")
def records() -> list[Labeled]:
    return load_labeled()


@pytest.fixture(scope="module")
def quality(analyzer: PersonalDataAnalyzer, records: list[Labeled]) -> Quality:
    return evaluate(analyzer, records)


def test_the_labeled_set_is_large_and_bilingual(records: list[Labeled]) -> None:
    languages = Counter(r.lang for r in records)
    assert len(records) >= 120
    assert min(languages["en"], languages["es"]) >= 0.4 * len(records)
    kinds = Counter(entity for r in records for entity, _, _ in r.spans)
    for entity in ("PERSON", "SECRET", "ES_NIF", "ES_NIE", "US_SSN", "EMPLOYEE_ID"):
        assert kinds[entity] >= 4, entity


def test_structured_recall(quality: Quality) -> None:
    assert quality.structured_below_target() == {}


def test_english_person_recall(quality: Quality) -> None:
    recall = quality.english_person.recall
    assert recall is not None
    assert recall >= TARGETS["english_person_recall"]


def test_overall_precision(quality: Quality) -> None:
    precision = quality.overall.precision
    assert precision is not None
    assert precision >= TARGETS["overall_precision"]
