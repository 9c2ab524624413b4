"""The "not covered" decisions of the whole grounded answer: retrieval's threshold, then the
model's own check, on the labeled corpus of bench.retrieval.

    TGI_URL=http://gpu-host:8080 .venv/bin/python -m bench.grounded
        [--set tuning|held-out] [--limit N] [--out decisions.json]
    PARLEY_LLM_BACKEND=local .venv/bin/python -m bench.grounded     # the packaged Gemma 3 270M

bench.retrieval measures the first line only: whether the best passage scores above
PARLEY_KNOWLEDGE_MIN_SCORE. That line is set low on purpose, so most near misses ("how many
vacation days do interns get?" when the policy never mentions interns) pass it and reach the
model, which is told to reply NOT_COVERED when its passages do not answer the question
(workers/grounding.py). This benchmark asks every question of both knowledge bases as a
channel that uses both would, gives the model the passages that pass the threshold in the
system message the worker builds (workers.pipeline.system_message), and counts a question as
refused when retrieval found nothing or the model replied with the marker alone.

- The model is the configured backend (PARLEY_LLM_BACKEND, TGI_URL, ...), decoding
  greedily (temperature 0) so that a rerun gives the same figures; a worker samples at the
  channel's temperature. Each answer is read only until it can no longer be the marker.
- Questions are asked without personal data redaction or thread history: the set has none.
- The figures are the product's only with the product's model: Llama 3 8B Instruct on TGI.
  The packaged Gemma 3 270M (PARLEY_LLM_BACKEND=local, CPU) runs the same method, for a dry
  run; a model that small says little about the decisions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.retrieval import (
    CORPUS,
    HELDOUT_SET,
    KNOWLEDGE_BASES,
    TARGETS,
    TUNING,
    Question,
    close_retriever,
    ingest_all,
    question_sets,
)

if TYPE_CHECKING:
    from knowledge.base import Retriever
    from llm.base import ChatModel
    from parley.settings import Settings

# Tokens read of an answer at most: far more than the marker needs.
MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class Decision:
    id: str
    covered: bool
    near_miss: bool
    best_score: float  # of the best passage retrieved (0: none)
    passages: int  # given to the model (0: refused by retrieval)
    answer: str  # what the model said, up to where it could no longer be the marker
    refused_by: str  # "retrieval", "model" or "" (answered)
    seconds: float

    @property
    def answered(self) -> bool:
        return not self.refused_by

    @property
    def right(self) -> bool:
        return self.answered == self.covered


async def decide(
    question: Question,
    retriever: Retriever,
    model: ChatModel,
    settings: Settings,
    kbs: Sequence[str],
) -> Decision:
    """One question through retrieval and, when a passage passes the threshold, the model."""
    from llm.base import ChatMessage, GenerationParams
    from workers.grounding import Grounding, is_not_covered
    from workers.pipeline import system_message

    started = time.perf_counter()
    found = await retriever.search(question.text, kbs, settings.knowledge_top_k)
    best = found[0].score if found else 0.0
    grounding = Grounding(
        tuple(kbs), tuple(p for p in found if p.score >= settings.knowledge_min_score)
    )
    if not grounding.covered:
        return Decision(
            question.id,
            question.covered,
            question.near_miss,
            best,
            0,
            "",
            "retrieval",
            time.perf_counter() - started,
        )
    params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, top_p=1.0)
    while True:  # as the worker does: drop the least relevant passages until the prompt fits
        system = system_message(settings.system_prompt, grounding)
        used = await model.count_tokens(system) + await model.count_tokens(question.text)
        fits = used + model.prompt_overhead_tokens(2) + MAX_NEW_TOKENS <= model.context_tokens
        if fits or len(grounding.passages) <= 1:
            break
        grounding = grounding.without_last()
    messages = [ChatMessage("system", system), ChatMessage("user", question.text)]
    text = ""
    stream = model.stream(messages, params)
    try:
        async for piece in stream:
            text += piece
            if not is_not_covered(text, partial=True):
                break  # an answer: it can no longer become the marker
    finally:
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()  # stops the generation
    refused = "model" if is_not_covered(text) else ""
    return Decision(
        question.id,
        question.covered,
        question.near_miss,
        best,
        len(grounding.passages),
        text,
        refused,
        time.perf_counter() - started,
    )


def summary(decisions: Sequence[Decision]) -> dict[str, Any]:
    covered = [d for d in decisions if d.covered]
    uncovered = [d for d in decisions if not d.covered]
    near = [d for d in uncovered if d.near_miss]

    def share(part: Sequence[Decision], total: Sequence[Decision]) -> dict[str, Any]:
        return {
            "hits": len(part),
            "total": len(total),
            "value": len(part) / len(total) if total else None,
        }

    return {
        "decisions": share([d for d in decisions if d.right], decisions),
        "covered_answered": share([d for d in covered if d.answered], covered),
        "uncovered_refused": share([d for d in uncovered if not d.answered], uncovered),
        "near_misses_refused": share([d for d in near if not d.answered], near),
        "uncovered_refused_by_retrieval": share(
            [d for d in uncovered if d.refused_by == "retrieval"], uncovered
        ),
        "uncovered_refused_by_model": share(
            [d for d in uncovered if d.refused_by == "model"], uncovered
        ),
        "covered_refused_by_model": share([d for d in covered if d.refused_by == "model"], covered),
        "model_calls": sum(1 for d in decisions if d.passages),
        "seconds_per_model_call": _mean([d.seconds for d in decisions if d.passages]),
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from knowledge import create_embedder, create_retriever, create_store
    from llm.factory import create_model, describe_backend
    from parley.settings import Settings

    sets = {name: qs for name, qs in question_sets().items() if args.set in (None, name)}
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-grounded-"))
    settings = Settings(knowledge_dir=workdir / "index")
    embedder = create_embedder(settings, threads=1)
    store = create_store(settings)
    retriever = create_retriever(settings, embedder)
    model = create_model(settings)
    figures: dict[str, Any] = {
        "model": describe_backend(settings),
        "threshold": settings.knowledge_min_score,
        "top_k": settings.knowledge_top_k,
        "sets": {},
    }
    try:
        await ingest_all({kb: CORPUS / kb for kb in KNOWLEDGE_BASES}, store, embedder, settings)
        for name, questions in sets.items():
            chosen = questions[: args.limit] if args.limit else questions
            decisions = []
            for number, question in enumerate(chosen, 1):
                decision = await decide(question, retriever, model, settings, KNOWLEDGE_BASES)
                decisions.append(decision)
                if args.verbose:
                    mark = "ok" if decision.right else "WRONG"
                    how = decision.refused_by or "answered"
                    print(f"  {name} {number}/{len(chosen)} {question.id}: {how} ({mark})")
            figures["sets"][name] = {
                **summary(decisions),
                "questions": [asdict(d) for d in decisions],
            }
    finally:
        await model.aclose()
        await close_retriever(retriever)
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def _share(figure: dict[str, Any]) -> str:
    if figure["value"] is None:
        return "-"
    return f"{figure['value']:.3f} ({figure['hits']}/{figure['total']})"


def report(figures: dict[str, Any]) -> str:
    names = list(figures["sets"])
    width = 44
    lines = [
        f"Grounded decisions: {figures['model']}, threshold {figures['threshold']:.2f}, "
        f"top {figures['top_k']} passages, greedy decoding",
        "",
        f"{'':{width}}" + "".join(f"{n:18}" for n in names) + "target",
    ]
    rows = [
        ("right decisions, retrieval then model", "decisions", TARGETS["not_covered_accuracy"]),
        ("  covered questions answered", "covered_answered", None),
        ("  uncovered questions refused", "uncovered_refused", None),
        ("    of which near misses", "near_misses_refused", None),
        ("    refused by retrieval", "uncovered_refused_by_retrieval", None),
        ("    refused by the model", "uncovered_refused_by_model", None),
        ("  covered questions the model refused", "covered_refused_by_model", None),
    ]
    for label, key, target in rows:
        cells = "".join(f"{_share(figures['sets'][n][key]):18}" for n in names)
        lines.append(f"{label:{width}}{cells}{f'>= {target}' if target else ''}")
    seconds = [figures["sets"][n]["seconds_per_model_call"] for n in names]
    calls = [figures["sets"][n]["model_calls"] for n in names]
    cells = "".join(
        f"{(f'{s:.2f} s x {c}' if s is not None else '-'):18}"
        for s, c in zip(seconds, calls, strict=True)
    )
    lines.append(f"{'seconds per question asked of the model':{width}}{cells}")
    for name in names:
        asked = figures["sets"][name]["questions"]
        wrong = [q for q in asked if q["covered"] != (not q["refused_by"])]
        if wrong:
            lines += ["", f"{name}: wrong decisions"]
        for q in wrong:
            what = "refused" if q["refused_by"] else "answered"
            said = f": {q['answer'][:60]!r}" if q["answer"] else ""
            lines.append(f"  {q['id']} {what} (best {q['best_score']:.2f}){said}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--set", choices=(TUNING, HELDOUT_SET), help="one set only")
    parser.add_argument("--limit", type=int, default=0, help="the first N questions of a set")
    parser.add_argument("--out", type=Path, help="write the figures and answers as JSON here")
    parser.add_argument("--verbose", action="store_true", help="a line per question")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures = asyncio.run(measure(args))
    print(report(figures))
    print(f"\n(benchmark ran {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2, ensure_ascii=False))
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
