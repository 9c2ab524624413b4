"""bench.grounded: retrieval's threshold, then the model's own "not covered", counted per
question, against the fake TGI over real HTTP (the corpus really ingested with USE)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import grounded
from bench.retrieval import question_sets
from tests.fakes.tgi import FakeTGI, last_user_message
from workers.grounding import GROUNDING_NOTE

# What the fake model declines: questions about interns (the policy never mentions them).
DECLINED = ("interns", "becarios")


def careful_model(prompt: str) -> str:
    """Declines questions naming a DECLINED word, the marker dressed as models dress it."""
    question = (last_user_message(prompt) or "").lower()
    if any(word in question for word in DECLINED):
        return "`NOT_COVERED`."
    return "Up to five days carry over [1]."


@pytest.fixture
def tgi(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTGI]:
    server = FakeTGI(responder=careful_model)
    server.start()
    monkeypatch.setenv("PARLEY_LLM_BACKEND", "tgi")
    monkeypatch.setenv("TGI_URL", server.url)
    monkeypatch.setenv("PARLEY_EMBEDDINGS", "use")
    yield server
    server.stop()


def test_each_question_is_refused_by_retrieval_by_the_model_or_answered(
    tgi: FakeTGI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = {q.id: q for q in question_sets()["tuning"]}
    out = tmp_path / "decisions.json"
    grounded.main(["--set", "tuning", "--out", str(out)])
    figures = json.loads(out.read_text(encoding="utf-8"))
    decisions = {d["id"]: d for d in figures["sets"]["tuning"]["questions"]}
    assert decisions.keys() == tuning.keys()

    # The near miss about interns passes retrieval; the model declines it.
    interns = decisions["nc-01"]
    assert interns["passages"] >= 1
    assert interns["refused_by"] == "model"
    # Everything else that passed retrieval was answered, and read only as far as needed.
    for d in decisions.values():
        if d["passages"] and d["id"] not in ("nc-01", "nc-02"):
            assert d["refused_by"] == "", d
            assert d["answer"] == "Up"  # "Up" can no longer become the marker
        if not d["passages"]:
            assert d["refused_by"] == "retrieval"

    # The model got the worker's system message: the grounding note and the passages.
    asked = [p for p in tgi.prompts if "interns" in (last_user_message(p) or "")]
    assert len(asked) == 1
    assert GROUNDING_NOTE in asked[0]
    assert "Vacation" in asked[0]
    assert len(tgi.prompts) == figures["sets"]["tuning"]["model_calls"]

    # The counts add up, and the report shows them with the wrong decisions.
    s = figures["sets"]["tuning"]
    refused = s["uncovered_refused"]["hits"]
    assert (
        refused
        == s["uncovered_refused_by_retrieval"]["hits"] + (s["uncovered_refused_by_model"]["hits"])
    )
    assert s["uncovered_refused_by_model"]["hits"] == 2  # nc-01 and nc-02
    right = s["covered_answered"]["hits"] + refused
    assert s["decisions"] == {"hits": right, "total": len(tuning), "value": right / len(tuning)}
    printed = capsys.readouterr().out
    assert "right decisions, retrieval then model" in printed
    assert "nc-03 answered" in printed
