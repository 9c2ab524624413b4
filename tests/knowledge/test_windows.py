"""knowledge.windows: a passage is its chunk with the chunks beside it, each place once."""

from __future__ import annotations

from knowledge.chunking import chunk_sections
from knowledge.documents import Section
from knowledge.store import StoredChunk
from knowledge.windows import Window, positions, window_text, windows


def _chunks(source: str, sections: list[tuple[str, str]], start: int = 0) -> list[StoredChunk]:
    return [
        StoredChunk(f"{source}-{i}", source, i, "Doc", section, text)
        for i, (section, text) in enumerate(sections, start)
    ]


CHUNKS = [
    *_chunks("a.md", [("", "Intro of a."), ("One", "a1."), ("Two", "a2."), ("Three", "a3.")]),
    *_chunks("b.md", [("", "Intro of b."), ("One", "b1.")]),
]


def test_each_ranked_chunk_comes_with_its_neighbours_in_document_order() -> None:
    found = windows([2, 5], CHUNKS, positions(CHUNKS), k=3)
    # a.md position 2 with 1 and 3; b.md position 1 with 0 (there is no position 2).
    assert found == [Window(2, (1, 2, 3)), Window(5, (4, 5))]


def test_a_chunk_already_shown_takes_no_place_of_its_own() -> None:
    # 1 and 3 are inside the first passage; 0 is next to 1 but not yet shown.
    found = windows([2, 1, 3, 0, 4], CHUNKS, positions(CHUNKS), k=2)
    assert found == [Window(2, (1, 2, 3)), Window(0, (0,))]


def test_neighbours_never_cross_into_another_document_and_k_bounds_the_count() -> None:
    found = windows([3, 4, 0], CHUNKS, positions(CHUNKS), k=2)
    assert found == [Window(3, (2, 3)), Window(4, (4, 5))]
    assert windows([3], CHUNKS, positions(CHUNKS), k=1, reach=0) == [Window(3, (3,))]
    assert windows([], CHUNKS, positions(CHUNKS), k=3) == []


def test_the_text_names_other_sections_and_drops_repeated_overlap() -> None:
    long_paragraphs = "\n\n".join(
        f"Paragraph {n}: the VPN client keeps setting {n} at value {n * 11}." for n in range(8)
    )
    sections = [
        Section(("Guide", "Setup"), "Install the client from the portal."),
        Section(("Guide", "Settings"), long_paragraphs),
    ]
    chunked = chunk_sections(sections, max_tokens=40, overlap=10)
    assert len(chunked) >= 3
    assert chunked[1].section == chunked[2].section
    stored = [
        StoredChunk(f"c{i}", "guide.md", i, "Guide", c.section, c.text)
        for i, c in enumerate(chunked)
    ]
    text = window_text(Window(1, (0, 1, 2)), stored)

    # The neighbour before is from another section: its heading says so, and the anchor's
    # own heading marks where that section ends; the chunk after the anchor continues it.
    setup, settings = "## Guide > Setup\n", "## Guide > Settings\n"
    assert text.startswith(f"{setup}Install the client from the portal.\n\n{settings}")
    assert text.count(settings) == 1
    # Chunk 2 starts with the end of chunk 1 (knowledge.chunking's overlap): said once.
    overlap = chunked[2].text.partition("\n\n")[0]
    assert " ".join(chunked[1].text.split()).endswith(overlap)
    assert text.count(overlap) == 1
    assert text.endswith(chunked[2].text.partition("\n\n")[2])
