"""Split a long Markdown answer into messages that each fit a chat platform's limit.

Cuts are made at paragraph breaks, else line breaks, else sentence or word boundaries, and
only inside a fenced code block when nothing else fits; such a block is closed at the end
of one part and reopened (same language tag) at the start of the next.

The split is prefix-stable: every part except the last depends only on text that can no
longer change once the answer has grown past it, so a streaming reply can close a part
and move on to the next while the answer is still being written.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from enum import Enum
from itertools import accumulate
from typing import NamedTuple

MESSAGE_LIMIT = 3000
"""Per-message budget, counted by `slack_length`. Slack starts answering msg_too_long a
little under 4000 characters of text; 3000 leaves room for the mrkdwn conversion (tables
wrapped in fences) and stays far below the 12000 of a streamed Markdown message."""

MIN_LIMIT = 40

_OPENER = re.compile(r" {0,3}(`{3,})([^`]*)")
_CLOSER = re.compile(r" {0,3}(`{3,})\s*")
_FENCE_LIKE = re.compile(r" {0,3}```")


def slack_length(text: str) -> int:
    """Length once Slack's three reserved characters are escaped (&amp; &lt; &gt;)."""
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def _cost(ch: str) -> int:
    return 5 if ch == "&" else 4 if ch in "<>" else 1


@dataclass(frozen=True, slots=True)
class Part:
    """One message: `head + source[start:end] + tail`."""

    text: str
    start: int
    end: int
    head: str  # a code fence reopened at the start, or ""
    tail: str  # the code fence closed at the end, or ""


class _Fence(NamedTuple):
    marker: str  # the backtick run, so that the closing fence matches
    info: str  # language tag

    def reopen(self, limit: int) -> str:
        head = f"{self.marker}{self.info}\n"
        # A silly long info string must not eat the part's budget.
        return head if slack_length(head) <= limit // 4 else f"{self.marker}\n"


class _Kind(Enum):
    PARA = "para"
    LINE = "line"
    SENTENCE = "sentence"
    WORD = "word"
    LINE_IN_CODE = "line_in_code"
    WORD_IN_CODE = "word_in_code"


# Preference order; True means "only if the part is at least half full".
_TIERS: tuple[tuple[_Kind, bool], ...] = (
    (_Kind.PARA, True),
    (_Kind.LINE, True),
    (_Kind.SENTENCE, True),
    (_Kind.WORD, True),
    # Rather a short part than a code block cut in two.
    (_Kind.PARA, False),
    (_Kind.LINE, False),
    (_Kind.LINE_IN_CODE, True),
    (_Kind.LINE_IN_CODE, False),
    (_Kind.SENTENCE, False),
    (_Kind.WORD, False),
    (_Kind.WORD_IN_CODE, False),
)


class _Layout:
    """Costs and code-fence structure of the whole text, computed once per split."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.cum = [0, *accumulate(_cost(ch) for ch in text)]
        self.line_starts = [0, *(i + 1 for i, ch in enumerate(text) if ch == "\n")]
        self.fence_at_line: list[_Fence | None] = []  # the fence open where each line starts
        self.fence_line: list[bool] = []  # lines that look like a fence (never cut inside)
        fence: _Fence | None = None
        for start in self.line_starts:
            end = text.find("\n", start)
            line = text[start:] if end < 0 else text[start:end]
            self.fence_at_line.append(fence)
            self.fence_line.append(_FENCE_LIKE.match(line) is not None)
            if end < 0:
                break  # an unfinished line opens or closes nothing yet
            if fence is None:
                if m := _OPENER.fullmatch(line):
                    fence = _Fence(m.group(1), m.group(2).strip())
            elif (m := _CLOSER.fullmatch(line)) and len(m.group(1)) >= len(fence.marker):
                fence = None

    def line_of(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos) - 1

    def fence_at(self, pos: int) -> _Fence | None:
        """The fence a cut at `pos` falls inside (cuts happen at line starts or in text)."""
        return self.fence_at_line[self.line_of(pos)]

    def cost(self, start: int, end: int) -> int:
        return self.cum[end] - self.cum[start]

    def window_end(self, start: int, budget: int) -> int:
        """The furthest end whose cost from `start` stays within `budget`."""
        return bisect.bisect_right(self.cum, self.cum[start] + budget) - 1


def _tail(layout: _Layout, end: int) -> str:
    fence = layout.fence_at(end)
    if fence is None:
        return ""
    return fence.marker if layout.text[end - 1] == "\n" else f"\n{fence.marker}"


def _candidates(layout: _Layout, start: int, last: int, budget: int) -> dict[_Kind, list[int]]:
    """Cut positions in (start, last], by kind, in increasing order."""
    text = layout.text
    found: dict[_Kind, list[int]] = {kind: [] for kind in _Kind}
    line = layout.line_of(start)
    ticks = text.count("`", layout.line_starts[line], start)  # for inline code spans
    for pos in range(start + 1, last + 1):
        prev = text[pos - 1]
        if prev == "\n":
            ticks = 0
            fence = layout.fence_at(pos)
            if fence is None:
                para = pos - 2 >= start and text[pos - 2] == "\n"
                found[_Kind.PARA if para else _Kind.LINE].append(pos)
            # Not right after the opening fence: that would leave an empty block behind.
            elif layout.fence_at(pos - 1) is not None and (
                layout.cost(start, pos) + len(fence.marker) <= budget
            ):
                found[_Kind.LINE_IN_CODE].append(pos)
            continue
        if prev == "`":
            ticks += 1
            continue
        if prev != " " or pos - 2 < start or text[pos - 2] in " \t\n":
            continue
        line = layout.line_of(pos - 1)
        if layout.fence_line[line] or ticks % 2:
            continue
        fence = layout.fence_at_line[line]
        if fence is not None:
            if layout.cost(start, pos) + 1 + len(fence.marker) <= budget:
                found[_Kind.WORD_IN_CODE].append(pos)
        elif text[pos - 2] in ".!?" and not (pos - 3 >= start and text[pos - 3].isdigit()):
            found[_Kind.SENTENCE].append(pos)
        else:
            found[_Kind.WORD].append(pos)
    return found


def _cut(layout: _Layout, start: int, budget: int) -> int:
    """Where the part starting at `start` ends; the rest of the text does not fit."""
    text = layout.text
    last = layout.window_end(start, budget)
    found = _candidates(layout, start, last, budget)
    half = budget // 2
    for kind, fill in _TIERS:
        usable = [p for p in found[kind] if not fill or layout.cost(start, p) >= half]
        if usable:
            pos = usable[-1]
            # Leave no blank lines or spaces to start the next message with.
            skip = "\n" if kind in (_Kind.PARA, _Kind.LINE) else " "
            if kind in (_Kind.PARA, _Kind.LINE, _Kind.SENTENCE, _Kind.WORD):
                while pos < last and text[pos] == skip:
                    pos += 1
            return pos
    # No boundary at all: cut hard, leaving room to close a code block.
    pos = last
    while pos > start + 1 and layout.cost(start, pos) + len(_tail(layout, pos)) > budget:
        pos -= 1
    return pos


def split_parts(text: str, limit: int = MESSAGE_LIMIT) -> list[Part]:
    """Split `text` into parts whose `slack_length` is at most `limit`. Empty text: []."""
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}, got {limit}")
    if not text:
        return []
    layout = _Layout(text)
    parts: list[Part] = []
    start, head = 0, ""
    while True:
        budget = limit - slack_length(head)
        if layout.cost(start, len(text)) <= budget:
            parts.append(Part(head + text[start:], start, len(text), head, ""))
            return parts
        end = _cut(layout, start, budget)
        tail = _tail(layout, end)
        parts.append(Part(head + text[start:end] + tail, start, end, head, tail))
        fence = layout.fence_at(end)
        start, head = end, (fence.reopen(limit) if fence is not None else "")


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """The texts of `split_parts`: what to post, in order."""
    return [part.text for part in split_parts(text, limit)]
