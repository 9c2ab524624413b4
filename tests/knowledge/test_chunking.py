"""Chunking: sections by headings, a token budget, overlap between neighbours."""

from __future__ import annotations

import itertools

from knowledge.chunking import chunk_sections, indexed_text, section_name
from knowledge.documents import Section, parse_document
from knowledge.lexical import estimate_tokens


def _words(count: int, stem: str = "word") -> str:
    return " ".join(f"{stem}{i}" for i in range(count))


def test_estimate_tokens_counts_words_long_words_and_punctuation() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("the cat sat") == 3
    assert estimate_tokens("vacation") == 2  # a run of six letters, then two more
    assert estimate_tokens("Hello, world!") == 4
    assert estimate_tokens("días de vacaciones") == 4


def test_markdown_sections_follow_the_heading_path() -> None:
    text = (
        "# Vacation policy\n\nIntro paragraph.\n\n## Allowance\n\n25 days a year.\n\n"
        "### Part-time\n\nIn proportion.\n\n## Carry-over\n\nUp to five days.\n"
    )
    document = parse_document(text.encode(), "markdown", fallback_title="vacation")
    assert document.title == "Vacation policy"
    chunks = chunk_sections(document.sections, max_tokens=100, overlap=10)
    assert [(c.section, c.text) for c in chunks] == [
        ("", "Intro paragraph."),
        ("Allowance", "25 days a year."),
        ("Allowance > Part-time", "In proportion."),
        ("Carry-over", "Up to five days."),
    ]


def test_several_top_headings_stay_in_the_path_and_the_first_is_the_title() -> None:
    text = "# One\nfirst\n# Two\nsecond\n"
    document = parse_document(text.encode(), "markdown", fallback_title="file")
    assert document.title == "One"
    assert [s.path for s in document.sections] == [("One",), ("Two",)]


def test_headings_inside_code_fences_are_text_and_setext_headings_count() -> None:
    text = "Title\n=====\n\nSetup\n-----\n```\n# not a heading\n```\nafter\n"
    document = parse_document(text.encode(), "markdown", fallback_title="file")
    assert document.title == "Title"
    (section,) = document.sections
    assert section.path == ("Setup",)
    assert "# not a heading" in section.text


def test_a_document_without_headings_is_titled_by_its_file_name() -> None:
    document = parse_document(b"just text\n", "text", fallback_title="notes")
    assert document.title == "notes"
    assert document.sections == [Section((), "just text")]


def test_chunks_keep_the_budget_and_overlap_their_neighbours() -> None:
    paragraphs = "\n\n".join(_words(30, f"p{n}w") for n in range(10))  # 300 words
    chunks = chunk_sections([Section(("Long",), paragraphs)], max_tokens=80, overlap=15)
    assert len(chunks) > 3
    assert all(estimate_tokens(c.text) <= 80 for c in chunks)
    assert all(c.section == "Long" for c in chunks)
    for before, after in itertools.pairwise(chunks):
        tail = after.text.split()[:5]
        # The next chunk opens with the last words of the one before.
        assert " ".join(tail) in before.text
        overlap_words = []
        for word in after.text.split():
            if word in before.text.split():
                overlap_words.append(word)
            else:
                break
        assert 0 < estimate_tokens(" ".join(overlap_words)) <= 15
    # Every word of the section is in some chunk.
    seen = {w for c in chunks for w in c.text.split()}
    assert seen == set(paragraphs.split())


def test_a_paragraph_beyond_the_budget_is_split_at_sentences_then_words() -> None:
    sentences = " ".join(f"Sentence {i} says {_words(12, 's')}." for i in range(8))
    chunks = chunk_sections([Section((), sentences)], max_tokens=40, overlap=0)
    assert all(estimate_tokens(c.text) <= 40 for c in chunks)
    assert chunks[0].text.startswith("Sentence 0 ")
    one_word = "x" * 1000  # a "word" longer than the budget is cut
    cut = chunk_sections([Section((), one_word)], max_tokens=20, overlap=5)
    assert "".join(c.text for c in cut).replace(" ", "").count("x") >= 1000
    assert all(estimate_tokens(c.text) <= 20 for c in cut)


def test_no_overlap_when_asked_for_none() -> None:
    text = "\n\n".join(_words(20, f"p{n}w") for n in range(4))
    chunks = chunk_sections([Section((), text)], max_tokens=25, overlap=0)
    words = [w for c in chunks for w in c.text.split()]
    assert words == text.split()


def test_indexed_text_puts_title_and_headings_first() -> None:
    assert section_name(("Vacation", "Carry-over")) == "Vacation > Carry-over"
    assert indexed_text("HR", "Vacation > Carry-over", "Five days.") == (
        "HR > Vacation > Carry-over\nFive days."
    )
    assert indexed_text("HR", "", "Five days.") == "HR\nFive days."
