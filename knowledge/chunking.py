"""Splitting a document's sections into chunks of a token budget, with overlap.

Chunks never cross a heading: each section is chunked on its own, so every chunk has one
heading path to cite. Within a section, paragraphs (blank-line separated) are packed into
chunks of at most `max_tokens` approximate tokens (knowledge.lexical.estimate_tokens); a
paragraph too long on its own is split at line ends, then sentence ends, then between words.
Each chunk after the first of a section starts with the last `overlap` tokens (whole words)
of the chunk before it, so a sentence cut at a boundary is still found whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from knowledge.documents import Section
from knowledge.lexical import estimate_tokens

SECTION_SEPARATOR = " > "

_SENTENCE_END = re.compile(r"(?<=[.!?…;:])\s+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")


@dataclass(frozen=True, slots=True)
class Chunk:
    section: str  # heading path, "Vacation > Carry-over"
    text: str


def section_name(path: Sequence[str]) -> str:
    return SECTION_SEPARATOR.join(name for name in path if name)


def indexed_text(title: str, section: str, text: str) -> str:
    """What is embedded and searched for a chunk: its text under its title and headings, so
    that a question naming the topic finds the chunk that only says "up to five days"."""
    heading = f"{title}{SECTION_SEPARATOR}{section}" if section else title
    return f"{heading}\n{text}"


def chunk_sections(sections: Sequence[Section], *, max_tokens: int, overlap: int) -> list[Chunk]:
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    chunks: list[Chunk] = []
    for section in sections:
        name = section_name(section.path)
        for text in _chunk_text(section.text, max_tokens, overlap):
            chunks.append(Chunk(name, text))
    return chunks


def _chunk_text(text: str, max_tokens: int, overlap: int) -> list[str]:
    pieces: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text.strip()):
        if paragraph.strip():
            pieces.extend(_split(paragraph.strip("\n"), max_tokens, 0))
    out: list[str] = []
    current: list[str] = []
    used = 0
    for piece in pieces:
        size = estimate_tokens(piece)
        if current and used + size > max_tokens:
            previous = "\n\n".join(current)
            out.append(previous)
            tail = _tail(previous, min(overlap, max_tokens - size))
            current, used = ([tail], estimate_tokens(tail)) if tail else ([], 0)
        current.append(piece)
        used += size
    if current:
        out.append("\n\n".join(current))
    return out


def _split(text: str, max_tokens: int, level: int) -> list[str]:
    """Pieces of at most max_tokens: by lines, then sentences, then words."""
    if estimate_tokens(text) <= max_tokens:
        return [text]
    if level == 0:
        parts, joiner = text.split("\n"), "\n"
    elif level == 1:
        parts, joiner = _SENTENCE_END.split(text), " "
    else:
        return _split_words(text, max_tokens)
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for part in parts:
        if not part.strip():
            continue
        size = estimate_tokens(part)
        if size > max_tokens:
            if current:
                pieces.append(joiner.join(current))
                current, used = [], 0
            pieces.extend(_split(part, max_tokens, level + 1))
            continue
        if current and used + size > max_tokens:
            pieces.append(joiner.join(current))
            current, used = [], 0
        current.append(part)
        used += size
    if current:
        pieces.append(joiner.join(current))
    return pieces


def _split_words(text: str, max_tokens: int) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for word in text.split():
        size = estimate_tokens(word)
        while size > max_tokens:  # one "word" beyond the budget (a URL, a hash): cut it
            cut = _prefix_within(word, max_tokens)
            if current:
                pieces.append(" ".join(current))
                current, used = [], 0
            pieces.append(word[:cut])
            word = word[cut:]
            size = estimate_tokens(word)
        if current and used + size > max_tokens:
            pieces.append(" ".join(current))
            current, used = [], 0
        if word:
            current.append(word)
            used += size
    if current:
        pieces.append(" ".join(current))
    return pieces


def _prefix_within(word: str, max_tokens: int) -> int:
    """Length of the longest prefix of `word` estimated at no more than max_tokens."""
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_tokens(word[:middle]) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return low


def _tail(text: str, budget: int) -> str:
    """The last whole words of `text` within `budget` tokens."""
    if budget <= 0:
        return ""
    words = text.split()
    taken = 0
    used = 0
    for word in reversed(words):
        size = estimate_tokens(word)
        if used + size > budget:
            break
        used += size
        taken += 1
    return " ".join(words[len(words) - taken :]) if taken else ""
