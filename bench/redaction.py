"""Redaction speed and quality on the labeled helpdesk set.

    .venv/bin/python -m bench.redaction [--out figures.json]

(a) speed of the analysis behind each redaction, for ~60-word messages, on one core after
warm-up; (b) precision and recall per entity type over tests/privacy/data/
helpdesk_messages.jsonl, beside the issue's targets.

The set has two splits: "tuning" (126 messages; the recognizers were improved against it)
and "late" (40 messages, ids en-h*/es-h*, written after that tuning, reported on their own).
On its first run the late split scored PERSON recall 20/22 with 2 false alarms ("Austin",
"San Francisco"), PHONE_NUMBER 6/7 ("(+34) 699 12 34 56"), SECRET 8/9
("DB_PASSWORD=..."); those misses led to generic fixes (surname gazetteer, place and
ambiguous-name rules, "(+34)" prefixes, "*_PASSWORD=" keys), so it is no longer unseen.

Scoring: a labeled value counts as found when every character of it lies inside findings
of the same type (a half-redacted name still leaks). A finding counts as correct when it
overlaps a labeled value of the same type.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from privacy.analyzer import (
    DEFAULT_SPACY_MODEL,
    ENTITIES,
    Finding,
    PersonalDataAnalyzer,
    get_analyzer,
)

DATA = Path(__file__).resolve().parent.parent / "tests" / "privacy" / "data"
LABELED_SET = DATA / "helpdesk_messages.jsonl"
# The admin-defined pattern the labeled set uses.
PATTERNS = {"EMPLOYEE_ID": r"\bEMP-\d{6}\b"}
# Everything but names is structured (held to the higher recall target).
STRUCTURED = (*(e for e in ENTITIES if e != "PERSON"), *PATTERNS)
TARGETS = {
    "structured_recall": 0.95,
    "english_person_recall": 0.85,
    "overall_precision": 0.85,
    "p50_ms": 10.0,
}


@dataclass(frozen=True)
class Labeled:
    id: str
    lang: str
    split: str  # "tuning" or "late"
    text: str
    spans: tuple[tuple[str, int, int], ...]  # (entity, start, end)


def load_labeled(path: Path = LABELED_SET) -> list[Labeled]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        spans = tuple((e["type"], e["start"], e["end"]) for e in raw["entities"])
        for entity, start, end in spans:
            value = next(e["value"] for e in raw["entities"] if e["start"] == start)
            if raw["text"][start:end] != value:
                raise ValueError(f"{raw['id']}: span {start}:{end} of {entity} is misplaced")
        records.append(Labeled(raw["id"], raw["lang"], raw["split"], raw["text"], spans))
    return records


@dataclass
class Tally:
    labeled: int = 0
    found: int = 0
    predicted: int = 0
    correct: int = 0
    misses: list[str] = field(default_factory=list)  # message ids, never values
    false_alarms: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.found / self.labeled if self.labeled else None

    @property
    def precision(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None


@dataclass
class Quality:
    per_entity: dict[str, Tally]
    english_person: Tally

    def _sum(self, entities: Iterable[str]) -> Tally:
        total = Tally()
        for name in entities:
            t = self.per_entity.get(name, Tally())
            total.labeled += t.labeled
            total.found += t.found
            total.predicted += t.predicted
            total.correct += t.correct
        return total

    @property
    def overall(self) -> Tally:
        return self._sum(self.per_entity)

    @property
    def structured(self) -> Tally:
        return self._sum(STRUCTURED)

    def structured_below_target(self) -> dict[str, float]:
        """Structured types whose own recall misses the target."""
        low = {}
        for name in STRUCTURED:
            recall = self.per_entity.get(name, Tally()).recall
            if recall is not None and recall < TARGETS["structured_recall"]:
                low[name] = recall
        return low


def _covered(span: tuple[int, int], text: str, findings: Sequence[Finding], entity: str) -> bool:
    start, end = span
    return all(
        text[i].isspace() or any(f.entity == entity and f.start <= i < f.end for f in findings)
        for i in range(start, end)
    )


def evaluate(analyzer: PersonalDataAnalyzer, records: Sequence[Labeled]) -> Quality:
    per_entity: dict[str, Tally] = {}
    english_person = Tally()
    for record in records:
        findings = analyzer.find(record.text)
        for entity, start, end in record.spans:
            found = _covered((start, end), record.text, findings, entity)
            tallies = [per_entity.setdefault(entity, Tally())]
            if entity == "PERSON" and record.lang == "en":
                tallies.append(english_person)
            for tally in tallies:
                tally.labeled += 1
                tally.found += found
                if not found:
                    tally.misses.append(record.id)
        for f in findings:
            correct = any(
                entity == f.entity and start < f.end and f.start < end
                for entity, start, end in record.spans
            )
            tallies = [per_entity.setdefault(f.entity, Tally())]
            if f.entity == "PERSON" and record.lang == "en":
                tallies.append(english_person)
            for tally in tallies:
                tally.predicted += 1
                tally.correct += correct
                if not correct:
                    tally.false_alarms.append(record.id)
    return Quality(per_entity, english_person)


def sixty_word_messages(records: Sequence[Labeled], count: int = 100) -> list[str]:
    """Typical messages of about 60 words: labeled messages joined until they reach 50."""
    texts: list[str] = []
    i = 0
    while len(texts) < count:
        parts: list[str] = []
        while sum(len(p.split()) for p in parts) < 50:
            parts.append(records[i % len(records)].text)
            i += 1
        texts.append(" ".join(parts))
    return texts


def measure_speed(
    analyzer: PersonalDataAnalyzer, texts: Sequence[str], *, rounds: int = 5
) -> dict[str, float]:
    for text in texts[:20]:  # warm-up: lazy loads, regex compilation, caches
        analyzer.find(text)
    timings = []
    for _ in range(rounds):
        for text in texts:
            started = time.perf_counter()
            analyzer.find(text)
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "messages": len(timings),
        "mean_words": statistics.mean(len(t.split()) for t in texts),
        "p50_ms": statistics.median(timings),
        "p90_ms": timings[int(len(timings) * 0.9)],
        "p99_ms": timings[int(len(timings) * 0.99)],
    }


def measure_presidio_phone(texts: Sequence[str]) -> float:
    """Presidio's own PhoneRecognizer, alone, per message (p50 ms): why it is not used."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    recognizer = PhoneRecognizer(supported_regions=("ES", "US", "GB", "DE", "FR"))
    timings = []
    for text in texts:
        started = time.perf_counter()
        recognizer.analyze(text, ["PHONE_NUMBER"])
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _pin_to_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.3f}"


def _table(title: str, quality: Quality) -> list[str]:
    lines = [
        title,
        f"{'entity':<16}{'labeled':>8}{'found':>7}{'recall':>8}{'flagged':>9}{'correct':>9}"
        f"{'precision':>11}   target",
    ]
    rows = [*sorted(quality.per_entity.items()), ("PERSON (en)", quality.english_person)]
    rows += [("structured", quality.structured), ("overall", quality.overall)]
    for name, t in rows:
        target = ""
        if name in STRUCTURED:
            target = f"recall >= {TARGETS['structured_recall']}"
        elif name == "PERSON (en)":
            target = f"recall >= {TARGETS['english_person_recall']}"
        elif name == "overall":
            target = f"precision >= {TARGETS['overall_precision']}"
        lines.append(
            f"{name:<16}{t.labeled:>8}{t.found:>7}{_fmt(t.recall):>8}{t.predicted:>9}"
            f"{t.correct:>9}{_fmt(t.precision):>11}   {target}"
        )
    misses = {n: t.misses for n, t in quality.per_entity.items() if t.misses}
    alarms = {n: t.false_alarms for n, t in quality.per_entity.items() if t.false_alarms}
    return [*lines, f"missed in: {misses}", f"false alarms in: {alarms}", ""]


def report(
    quality: Quality, late: Quality, speed: dict[str, float], presidio_phone_ms: float
) -> str:
    lines = [
        f"Speed ({speed['messages']} analyses of ~{speed['mean_words']:.0f}-word messages, "
        "one core, after warm-up)",
        f"  p50 {speed['p50_ms']:.2f} ms   p90 {speed['p90_ms']:.2f} ms   "
        f"p99 {speed['p99_ms']:.2f} ms      target p50 <= {TARGETS['p50_ms']:.0f} ms",
        f"  (Presidio's PhoneRecognizer, 5 regions, would add {presidio_phone_ms:.2f} ms p50;"
        " ours is part of the figure above)",
        "",
    ]
    lines += _table("Quality, whole labeled set", quality)
    lines += _table("Quality, late split only (written after tuning; see the docstring)", late)
    return "\n".join(lines)


def _tally_json(t: Tally) -> dict[str, object]:
    return {
        "labeled": t.labeled,
        "found": t.found,
        "recall": t.recall,
        "flagged": t.predicted,
        "correct": t.correct,
        "precision": t.precision,
        "missed_in": t.misses,
        "false_alarms_in": t.false_alarms,
    }


def _quality_json(quality: Quality) -> dict[str, object]:
    return {
        "per_entity": {name: _tally_json(t) for name, t in sorted(quality.per_entity.items())},
        "english_person": _tally_json(quality.english_person),
        "structured": _tally_json(quality.structured),
        "overall": _tally_json(quality.overall),
    }


def figures(
    quality: Quality, late: Quality, speed: dict[str, float], presidio_phone_ms: float
) -> dict[str, object]:
    return {
        "speed": {**speed, "presidio_phone_recognizer_p50_ms": presidio_phone_ms},
        "quality": _quality_json(quality),
        "late_split_quality": _quality_json(late),
        "targets": TARGETS,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--model", default=DEFAULT_SPACY_MODEL, help="spaCy model package")
    args = parser.parse_args(argv)

    core = _pin_to_one_core()
    started = time.perf_counter()
    analyzer = get_analyzer(args.model, PATTERNS)
    print(f"analyzer loaded in {time.perf_counter() - started:.1f} s (pinned to core {core})")
    records = load_labeled()
    texts = sixty_word_messages(records)
    speed = measure_speed(analyzer, texts)
    presidio_phone_ms = measure_presidio_phone(texts)
    quality = evaluate(analyzer, records)
    late = evaluate(analyzer, [r for r in records if r.split == "late"])
    print(report(quality, late, speed, presidio_phone_ms))
    counts = Counter((r.split, r.lang) for r in records)
    print(f"labeled set: {len(records)} messages {dict(sorted(counts.items()))}")
    if args.out:
        data = figures(quality, late, speed, presidio_phone_ms)
        args.out.write_text(json.dumps(data, indent=2))
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
