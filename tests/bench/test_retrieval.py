"""bench.retrieval end to end: the labeled corpus ingested and every question asked, here
through the fake TEI server over real HTTP, as `--embedder tei` measures a production model."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import retrieval
from tests.fakes.tei import FakeTEI

DIMENSION = 64


@pytest.fixture
def tei(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTEI]:
    server = FakeTEI(dimension=DIMENSION)
    server.start()
    monkeypatch.setenv("PARLEY_TEI_URL", server.url)
    monkeypatch.setenv("PARLEY_TEI_DIMENSION", str(DIMENSION))
    monkeypatch.setenv("PARLEY_EMBEDDINGS_LANGUAGES", "en,es")
    yield server
    server.stop()


def test_measures_a_tei_server_and_reports_every_figure(
    tei: FakeTEI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpus = os.sched_getaffinity(0)
    out = tmp_path / "figures.json"
    retrieval.main(["--embedder", "tei", "--scale-chunks", "0", "--rounds", "1", "--out", str(out)])
    # The benchmark pins itself to one core while it measures, and gives the rest back.
    assert os.sched_getaffinity(0) == cpus

    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["embedder"] == "tei:acme/hashing"  # the model the server said it serves
    # The corpus, every question of both knowledge bases, and the words of the bridge
    # (en,es) all went through the server.
    texts = sum(len(r["inputs"]) for r in tei.requests)
    assert texts > figures["ingest"]["chunks"] * 2
    sets = retrieval.question_sets()
    for name, questions in sets.items():
        quality = figures["sets"][name]
        covered = sum(q.covered for q in questions)
        recall = quality["recall_at_3"]["overall"]
        assert recall["total"] == covered
        assert 0 < recall["hits"] <= covered  # hashed words still find some passages
        decided = quality["not_covered"]
        assert decided["all"]["total"] == len(questions)
        assert decided["accuracy_answering_every_question"] == covered / len(questions)
        best = decided["accuracy_at_best_threshold_tuned_on_this_set"]
        assert best >= decided["accuracy_answering_every_question"]
        assert best >= decided["all"]["value"]
        assert len(quality["questions"]) == len(questions)
    assert figures["latency_corpus"]["p50_ms"] > 0

    printed = capsys.readouterr().out
    assert "embedder tei:acme/hashing" in printed
    assert "answering every question (no threshold)" in printed
    assert "recall@3, all covered questions" in printed
