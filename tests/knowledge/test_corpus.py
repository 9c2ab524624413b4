"""The labeled retrieval set is consistent: the benchmark (bench/retrieval.py) can trust it.

Fast and model-free: it reads the documents and questions.jsonl, nothing else.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from bench.retrieval import (
    CORPUS,
    KNOWLEDGE_BASES,
    Question,
    document_text,
    documents,
    load_questions,
    normalize,
)

# Words frequent in one language and rare in the other: enough to tell the documents apart.
_ES = {"el", "la", "los", "las", "de", "del", "que", "y", "en", "por", "para", "una", "con"}
_EN = {"the", "of", "and", "to", "in", "is", "for", "your", "you", "with", "are", "on"}


def _language(text: str) -> str:
    words = Counter(re.findall(r"[a-záéíóúñü]+", text.casefold()))
    es = sum(words[w] for w in _ES)
    en = sum(words[w] for w in _EN)
    return "es" if es > en else "en"


@pytest.fixture(scope="module")
def questions() -> list[Question]:
    return load_questions()


@pytest.fixture(scope="module")
def texts() -> dict[tuple[str, str], str]:
    """(knowledge base, file name) -> normalized text, for every document of the corpus."""
    return {(kb, path.name): normalize(document_text(path)) for kb, path in documents()}


def test_enough_questions_covered_and_not(questions: list[Question]) -> None:
    assert len(questions) >= 60
    assert sum(q.covered for q in questions) >= 60
    uncovered = [q for q in questions if not q.covered]
    assert len(uncovered) >= 12
    assert any(q.near_miss for q in uncovered), "some uncovered questions must be near misses"
    assert len({q.id for q in questions}) == len(questions), "question ids must be unique"


def test_both_languages_and_cross_lingual_in_both_directions(questions: list[Question]) -> None:
    langs = Counter(q.lang for q in questions)
    assert set(langs) == {"en", "es"}
    assert min(langs.values()) >= 20
    cross = Counter(q.lang for q in questions if q.cross_lingual)
    assert cross["en"] >= 5, cross
    assert cross["es"] >= 5, cross
    assert sum(q.paraphrase for q in questions) >= 5


def test_every_knowledge_base_has_documents_in_both_languages_and_all_formats(
    texts: dict[tuple[str, str], str],
) -> None:
    for kb in KNOWLEDGE_BASES:
        names = [name for base, name in texts if base == kb]
        assert names, f"{kb} is empty"
        assert {_language(texts[kb, n]) for n in names} == {"en", "es"}, kb
    suffixes = Counter(name.rsplit(".", 1)[1] for _, name in texts)
    assert suffixes["html"] >= 1
    assert suffixes["txt"] >= 1
    assert suffixes["md"] >= 10
    assert 20 <= len(texts) <= 30


def test_documents_are_200_to_800_words() -> None:
    for kb, path in documents():
        words = len(document_text(path).split())
        assert 200 <= words <= 800, f"{kb}/{path.name}: {words} words"


def test_every_anchor_occurs_in_exactly_its_named_file(
    questions: list[Question], texts: dict[tuple[str, str], str]
) -> None:
    for q in questions:
        if not q.covered:
            assert not q.answers, f"{q.id}: an uncovered question names no passage"
            continue
        assert q.answers, f"{q.id}: a covered question names its passage"
        for answer in q.answers:
            anchor = normalize(answer.anchor)
            assert len(anchor.split()) >= 3 or any(c.isdigit() for c in anchor), (
                f"{q.id}: anchor {answer.anchor!r} is too short to point at one passage"
            )
            where = sorted(f"{kb}/{name}" for (kb, name), text in texts.items() if anchor in text)
            assert where == [f"{q.kb}/{answer.source}"], f"{q.id}: {answer.anchor!r} in {where}"


def test_cross_lingual_marks_match_the_documents_languages(
    questions: list[Question], texts: dict[tuple[str, str], str]
) -> None:
    for q in questions:
        if not q.covered:
            assert not q.cross_lingual
            continue
        languages = {_language(texts[q.kb, a.source]) for a in q.answers}
        # Cross-lingual: no passage that answers it is in the question's language.
        assert q.cross_lingual == (q.lang not in languages), q.id
        # The first named source is in the question's language unless it is cross-lingual.
        assert q.cross_lingual or _language(texts[q.kb, q.answers[0].source]) == q.lang, q.id


def test_corpus_folder_holds_only_the_knowledge_bases_and_the_questions() -> None:
    entries = {p.name for p in CORPUS.iterdir()}
    assert entries == {*KNOWLEDGE_BASES, "questions.jsonl"}
