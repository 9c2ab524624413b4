"""The labeled retrieval set is consistent: the benchmark (bench/retrieval.py) can trust it.

Fast and model-free: it reads the documents, questions.jsonl and heldout.jsonl, nothing else.
Both question files pass the same checks; the held-out one has its own minimums.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.retrieval import (
    CORPUS,
    HELDOUT,
    KNOWLEDGE_BASES,
    QUESTIONS,
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


@dataclass(frozen=True)
class Minimums:
    """How large and how mixed a question file must at least be."""

    total: int
    covered: int
    uncovered: int
    near_misses: int
    per_language: int
    cross_lingual_per_direction: int
    paraphrases: int


MINIMUMS = {
    QUESTIONS.name: Minimums(60, 60, 12, 1, 20, 5, 5),
    # Held out: never tuned on, so its figures are the honest ones; it must be big enough to say
    # something about each kind of question.
    HELDOUT.name: Minimums(80, 55, 25, 15, 35, 10, 10),
}


@pytest.fixture(scope="module", params=[QUESTIONS, HELDOUT], ids=lambda path: path.name)
def question_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(scope="module")
def questions(question_file: Path) -> list[Question]:
    return load_questions(question_file)


@pytest.fixture(scope="module")
def minimums(question_file: Path) -> Minimums:
    return MINIMUMS[question_file.name]


def _plain(text: str) -> str:
    """A question's words: case, punctuation and spacing do not make it a new question."""
    return " ".join(re.sub(r"[^\w\s]", " ", normalize(text)).split())


@pytest.fixture(scope="module")
def texts() -> dict[tuple[str, str], str]:
    """(knowledge base, file name) -> normalized text, for every document of the corpus."""
    return {(kb, path.name): normalize(document_text(path)) for kb, path in documents()}


def test_enough_questions_covered_and_not(questions: list[Question], minimums: Minimums) -> None:
    assert len(questions) >= minimums.total
    assert sum(q.covered for q in questions) >= minimums.covered
    uncovered = [q for q in questions if not q.covered]
    assert len(uncovered) >= minimums.uncovered
    assert sum(q.near_miss for q in uncovered) >= minimums.near_misses, (
        "some uncovered questions must be near misses"
    )
    assert not any(q.near_miss for q in questions if q.covered), "a near miss is not covered"
    assert len({q.id for q in questions}) == len(questions), "question ids must be unique"


def test_both_languages_and_cross_lingual_in_both_directions(
    questions: list[Question], minimums: Minimums
) -> None:
    langs = Counter(q.lang for q in questions)
    assert set(langs) == {"en", "es"}
    assert min(langs.values()) >= minimums.per_language
    cross = Counter(q.lang for q in questions if q.cross_lingual)
    assert cross["en"] >= minimums.cross_lingual_per_direction, cross
    assert cross["es"] >= minimums.cross_lingual_per_direction, cross
    assert sum(q.paraphrase for q in questions) >= minimums.paraphrases


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
    assert entries == {*KNOWLEDGE_BASES, QUESTIONS.name, HELDOUT.name}


def test_heldout_questions_are_new() -> None:
    """A held-out question repeating a tuned-on one would measure the tuning, not the retriever."""
    tuned = load_questions(QUESTIONS)
    heldout = load_questions(HELDOUT)
    seen = {_plain(q.text) for q in tuned}
    repeated = [q.id for q in heldout if _plain(q.text) in seen]
    assert not repeated, f"held-out questions repeat questions.jsonl: {repeated}"
    assert not {q.id for q in tuned} & {q.id for q in heldout}, "ids must not be shared"
