"""Retrieval quality and speed on the labeled IT/HR corpus, in English and Spanish.

    .venv/bin/python -m bench.retrieval [--embedder local|hash] [--store faiss|pgvector]
                                        [--scale-chunks 10000] [--out results.json]

The corpus is tests/knowledge/data/: it-runbooks/ and hr-policies/ (27 documents, Markdown,
one HTML and one plain-text file) and questions.jsonl (the labeled questions). The benchmark
ingests both folders into temporary knowledge bases and asks every question of both at once,
as a channel that uses both would.

- recall@3: a covered question counts when one of the top 3 passages contains its anchor
  (the quote of its answer, or of the same answer in the other language's version of the
  document), compared case- and whitespace-insensitively. Reported overall, for English and
  Spanish questions, for cross-lingual ones (question and answer in different languages)
  and for paraphrases (few words shared with the passage).
- "not covered" decisions: a question is answered when its best passage scores at or above
  the retriever's threshold. Accuracy over all questions (covered ones must pass, uncovered
  ones must not), at that threshold; and the best threshold on this set, which is tuned on
  the set itself and so only says how far the shipped threshold is from it.
- latency of one search (the question embedded, the index searched, passages read), p50 and
  p99 over 3 rounds of all questions after a warm-up, and ingest throughput (chunks per
  second, embedding included).
- scale: synthetic filler sections (text generated from the corpus's own words, none
  containing an anchor) bring the two knowledge bases to 10,000 chunks; the latency of the
  same questions is measured again (recall@3 at that size is printed for information).

Every figure is taken on one core: the process is pinned to one CPU with
os.sched_setaffinity and OMP/MKL/OpenBLAS/torch use one thread (set before they are
imported), except building the 10,000-chunk index, which uses the cores the process had.
"""

from __future__ import annotations

import html.parser
import itertools
import json
import os
import random
import re
import statistics
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "knowledge" / "data"
QUESTIONS = CORPUS / "questions.jsonl"
KNOWLEDGE_BASES = ("it-runbooks", "hr-policies")
SUFFIXES = (".md", ".txt", ".html", ".htm", ".pdf")
K = 3
TARGETS = {"recall_at_3": 0.9, "not_covered_accuracy": 0.9, "p50_ms_at_10k": 30.0}


# -- the labeled set -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    source: str  # file name inside the knowledge base's folder
    anchor: str  # a quote from the passage that answers the question


@dataclass(frozen=True)
class Question:
    id: str
    lang: str
    text: str
    covered: bool
    kb: str  # the knowledge base that answers it (or would, for an uncovered one)
    answers: tuple[Answer, ...]  # the first is the labeled source; others are translations
    cross_lingual: bool = False
    paraphrase: bool = False
    near_miss: bool = False


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        raw = json.loads(line)
        try:
            answers: tuple[Answer, ...] = ()
            if raw["covered"]:
                answers = (
                    Answer(raw["source"], raw["anchor"]),
                    *(Answer(a["source"], a["anchor"]) for a in raw.get("alternatives", ())),
                )
            questions.append(
                Question(
                    id=raw["id"],
                    lang=raw["lang"],
                    text=raw["question"],
                    covered=raw["covered"],
                    kb=raw["kb"],
                    answers=answers,
                    cross_lingual=raw.get("cross_lingual", False),
                    paraphrase=raw.get("paraphrase", False),
                    near_miss=raw.get("near_miss", False),
                )
            )
        except KeyError as missing:
            raise ValueError(f"{path.name} line {number}: no {missing}") from None
    return questions


class _TextOfHTML(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def document_text(path: Path) -> str:
    """The text a reader sees: HTML without its tags, other files as they are."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".html", ".htm"):
        parser = _TextOfHTML()
        parser.feed(text)
        text = " ".join(parser.parts)
    return text


def documents(root: Path = CORPUS) -> Iterator[tuple[str, Path]]:
    """(knowledge base, path) for every document of the corpus."""
    for kb in KNOWLEDGE_BASES:
        for path in sorted((root / kb).iterdir()):
            if path.suffix in SUFFIXES:
                yield kb, path


def normalize(text: str) -> str:
    """Case, Unicode forms and whitespace do not decide whether a passage holds an anchor."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


# -- scoring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """What the benchmark keeps of one retrieved passage."""

    kb: str
    source: str
    text: str
    score: float


@dataclass(frozen=True)
class Outcome:
    question: Question
    hits: tuple[Hit, ...]

    @property
    def top_score(self) -> float:
        return self.hits[0].score if self.hits else 0.0

    @property
    def found_at(self) -> int | None:
        """Rank (1-based) of the first passage holding an anchor of the question."""
        anchors = [normalize(a.anchor) for a in self.question.answers]
        for rank, hit in enumerate(self.hits[:K], 1):
            if hit.kb == self.question.kb:
                text = normalize(hit.text)
                if any(anchor in text for anchor in anchors):
                    return rank
        return None


@dataclass
class Ratio:
    hits: int = 0
    total: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, ok: bool, qid: str) -> None:
        self.total += 1
        self.hits += ok
        if not ok:
            self.failures.append(qid)

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None


def recall_at_k(outcomes: Sequence[Outcome]) -> dict[str, Ratio]:
    groups = {
        "overall": Ratio(),
        "english": Ratio(),
        "spanish": Ratio(),
        "cross-lingual": Ratio(),
        "paraphrase": Ratio(),
    }
    for o in outcomes:
        q = o.question
        if not q.covered:
            continue
        ok = o.found_at is not None
        groups["overall"].add(ok, q.id)
        groups["english" if q.lang == "en" else "spanish"].add(ok, q.id)
        if q.cross_lingual:
            groups["cross-lingual"].add(ok, q.id)
        if q.paraphrase:
            groups["paraphrase"].add(ok, q.id)
    return groups


def decisions(outcomes: Sequence[Outcome], threshold: float) -> dict[str, Ratio]:
    """Answered (top score >= threshold) for covered questions, refused for the others."""
    groups = {
        "all": Ratio(),
        "covered answered": Ratio(),
        "uncovered refused": Ratio(),
        "near misses refused": Ratio(),
    }
    for o in outcomes:
        q = o.question
        answered = o.top_score >= threshold
        groups["all"].add(answered == q.covered, q.id)
        if q.covered:
            groups["covered answered"].add(answered, q.id)
        else:
            groups["uncovered refused"].add(not answered, q.id)
            if q.near_miss:
                groups["near misses refused"].add(not answered, q.id)
    return groups


def best_threshold(outcomes: Sequence[Outcome]) -> tuple[float, float]:
    """The threshold with the most correct decisions on this very set, and that accuracy.

    Candidates are midpoints between consecutive top scores; ties go to the lowest."""
    scores = sorted({o.top_score for o in outcomes})
    candidates = [scores[0] - 1e-6] + [(a + b) / 2 for a, b in itertools.pairwise(scores)]
    candidates.append(scores[-1] + 1e-6)
    best = max(candidates, key=lambda t: (decisions(outcomes, t)["all"].value or 0.0, -t))
    return best, decisions(outcomes, best)["all"].value or 0.0


def percentiles(timings_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(timings_ms)
    return {
        "searches": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p90_ms": ordered[int(len(ordered) * 0.9)],
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


# -- synthetic filler for the scale test -----------------------------------------------------


def _language_of(text: str) -> str:
    words = re.findall(r"\w+", text.casefold())
    spanish = sum(w in {"el", "la", "los", "las", "de", "que", "en", "y", "para"} for w in words)
    english = sum(w in {"the", "of", "and", "to", "is", "you", "your", "for"} for w in words)
    return "es" if spanish > english else "en"


class _Chain:
    """A word bigram chain over the corpus: filler that reads like the documents' vocabulary
    and word order without saying anything they say."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.next: dict[str, list[str]] = {}
        self.starts: list[str] = []
        for text in texts:
            for sentence in re.split(r"(?<=[.!?])\s+", text):
                words = [w for w in sentence.split() if not w.startswith(("#", "|", "<", "`"))]
                if len(words) < 4:
                    continue
                self.starts.append(words[0])
                for a, b in itertools.pairwise(words):
                    self.next.setdefault(a, []).append(b)

    def sentence(self, rng: random.Random, max_words: int = 24) -> str:
        word = rng.choice(self.starts)
        words = [word]
        while len(words) < max_words and word in self.next and not word.endswith("."):
            word = rng.choice(self.next[word])
            words.append(word)
        text = " ".join(words).rstrip(",;:")
        return text if text.endswith((".", "?", "!")) else text + "."


def write_filler(folder: Path, sections: int, *, anchors: Sequence[str], seed: int = 7) -> int:
    """Markdown files of ~60-word sections, 25 per file, half English and half Spanish.

    A section that happens to contain an anchor is generated again. Returns the sections
    written; each is short enough to be one chunk."""
    texts = [document_text(path) for _, path in documents()]
    chains = {lang: _Chain([t for t in texts if _language_of(t) == lang]) for lang in ("en", "es")}
    banned = [normalize(a) for a in anchors]
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    file_number = 0
    while written < sections:
        lang = "en" if file_number % 2 == 0 else "es"
        chain = chains[lang]
        parts = [f"# {chain.sentence(rng, 6).rstrip('.')} ({file_number})\n"]
        for _ in range(min(25, sections - written)):
            while True:
                body = " ".join(chain.sentence(rng) for _ in range(4))
                if not any(anchor in normalize(body) for anchor in banned):
                    break
            parts.append(f"## {chain.sentence(rng, 5).rstrip('.')}\n\n{body}\n")
            written += 1
        (folder / f"filler-{file_number:04d}.md").write_text("\n".join(parts), encoding="utf-8")
        file_number += 1
    return written


# -- pinning ---------------------------------------------------------------------------------


def pin_to_one_core() -> tuple[int | None, set[int]]:
    """Pins the process to one CPU; returns it and the CPUs it had (to unpin)."""
    if not hasattr(os, "sched_setaffinity"):
        return None, set()
    had = os.sched_getaffinity(0)
    core = min(had)
    os.sched_setaffinity(0, {core})
    return core, had


def unpin(cpus: set[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
