"""A passage is a ranked chunk read together with the chunks beside it.

Chunks are small (PARLEY_KNOWLEDGE_CHUNK_TOKENS) so that each is about one thing and ranks
sharply, but the sentence that answers a question often sits next to the chunk that ranks
best: a section's opening names the topic, the next chunk gives the figure. So each passage
the model gets is one of the best chunks with up to `reach` chunks before and after it in
the same document, and a chunk already inside a passage takes no place of its own: the k
passages cover k different places of the documents, not one place three times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from knowledge.store import StoredChunk

# Chunks on each side of a ranked chunk that its passage includes.
DEFAULT_REACH = 1

Positions = Mapping[tuple[str, int], int]  # (source, position in it) -> row


def positions(chunks: Sequence[StoredChunk]) -> dict[tuple[str, int], int]:
    return {(chunk.source, chunk.position): row for row, chunk in enumerate(chunks)}


@dataclass(frozen=True, slots=True)
class Window:
    anchor: int  # the ranked row that the passage is for (its score, section and id)
    rows: tuple[int, ...]  # the anchor and its neighbours, in document order


def windows(
    ranked: Iterable[int],
    chunks: Sequence[StoredChunk],
    by_position: Positions,
    *,
    k: int,
    reach: int = DEFAULT_REACH,
) -> list[Window]:
    """The first k windows around `ranked` rows (best first), skipping rows already shown."""
    shown: set[int] = set()
    found: list[Window] = []
    for row in ranked:
        if len(found) >= k:
            break
        if row in shown:
            continue
        chunk = chunks[row]
        rows = []
        for offset in range(-reach, reach + 1):
            other = by_position.get((chunk.source, chunk.position + offset))
            if other is not None and other not in shown:
                rows.append(other)
        shown.update(rows)
        found.append(Window(row, tuple(rows)))
    return found


def window_text(window: Window, chunks: Sequence[StoredChunk]) -> str:
    """The window's chunks as one text: the overlap a chunk repeats from the one before it
    is dropped, and a neighbour from another section starts with that section's heading."""
    anchor = chunks[window.anchor]
    parts: list[str] = []
    previous: StoredChunk | None = None
    for row in window.rows:
        chunk = chunks[row]
        text = chunk.text.strip()
        if previous is not None and previous.section == chunk.section:
            text = _without_overlap(previous.text, text)
        elif previous is not None or chunk.section != anchor.section:
            text = f"## {chunk.section or chunk.title}\n{text}"
        if text:
            parts.append(text)
        previous = chunk
    return "\n\n".join(parts)


def _without_overlap(before: str, text: str) -> str:
    """`text` less its first paragraph when that only repeats the end of `before`: the
    overlap knowledge.chunking puts at the start of a section's every chunk but the first."""
    first, _, rest = text.partition("\n\n")
    if rest and " ".join(before.split()).endswith(" ".join(first.split())):
        return rest.lstrip()
    return text
