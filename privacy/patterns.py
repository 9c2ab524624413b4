"""Regex recognizers for Presidio, on the `regex` package.

A pattern may name a group `v`: only that part is personal (in `password: hunter2` the
secret is `hunter2`, not the word "password").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import regex
from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts


@dataclass(frozen=True, slots=True)
class RegexPattern:
    """One way to find an entity; `check` confirms a candidate (checksum, entropy...)."""

    name: str
    regex: regex.Pattern[str]
    score: float
    check: Callable[[str], bool] | None = None
    # For free-form values ("password: abc123."): a trailing full stop or bracket ends the
    # sentence, not the value.
    trim: bool = False

    def spans(self, text: str) -> Iterable[tuple[int, int]]:
        group = "v" if "v" in self.regex.groupindex else 0
        for match in self.regex.finditer(text):
            start, end = match.span(group)
            if self.trim:
                value = text[start:end]
                end -= len(value) - len(value.rstrip(".,;:)]}>\"'"))
            if end > start and (self.check is None or self.check(text[start:end])):
                yield start, end


class RegexRecognizer(EntityRecognizer):
    """A Presidio recognizer over `regex` patterns; context words raise a weak score."""

    name: str

    def __init__(
        self,
        entity: str,
        patterns: Sequence[RegexPattern],
        *,
        context: Sequence[str] = (),
        language: str = "en",
        name: str | None = None,
    ) -> None:
        self.patterns = tuple(patterns)
        super().__init__(
            supported_entities=[entity],
            name=name or f"{entity.title().replace('_', '')}Recognizer",
            supported_language=language,
            context=list(context),
        )

    def load(self) -> None:
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        entity = self.supported_entities[0]
        best: dict[tuple[int, int], RegexPattern] = {}
        for pattern in self.patterns:
            for span in pattern.spans(text):
                if span not in best or best[span].score < pattern.score:
                    best[span] = pattern
        # "612 345 678" inside "+34 612 345 678" is the same value, found twice.
        best = {
            (s, e): p
            for (s, e), p in best.items()
            if not any(o != (s, e) and o[0] <= s and e <= o[1] for o in best)
        }
        return [
            RecognizerResult(
                entity_type=entity,
                start=start,
                end=end,
                score=pattern.score,
                # Presidio's context enhancer records the supporting word here.
                analysis_explanation=AnalysisExplanation(
                    recognizer=self.name,
                    original_score=pattern.score,
                    pattern_name=pattern.name,
                    textual_explanation=f"matched {pattern.name}",
                ),
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                },
            )
            for (start, end), pattern in best.items()
        ]
