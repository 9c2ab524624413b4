from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.split import MESSAGE_LIMIT, Part, slack_length, split_message, split_parts

_HEAD = re.compile(r"`{3,}[^`\n]*\n")
_TAIL = re.compile(r"\n?`{3,}")


def _paragraphs(count: int, size: int) -> list[str]:
    return [f"Paragraph {i}. " + "lorem ipsum " * (size // 12) for i in range(count)]


def test_short_text_is_one_part() -> None:
    assert split_message("Hello *there*") == ["Hello *there*"]


def test_empty_text_has_no_parts() -> None:
    assert split_message("") == []


def test_splits_at_paragraph_breaks() -> None:
    paras = _paragraphs(6, 100)
    parts = split_message("\n\n".join(paras), limit=250)
    assert len(parts) == 3
    assert [p.strip() for p in parts] == ["\n\n".join(paras[i : i + 2]).strip() for i in (0, 2, 4)]


def test_prefers_line_then_sentence_then_word_boundaries() -> None:
    lines = "\n".join(f"line {i} " + "x" * 40 for i in range(10))
    assert all(p.endswith("\n") for p in split_message(lines, limit=120)[:-1])
    sentences = " ".join(f"Sentence number {i} is here." for i in range(20))
    assert all(p.endswith(". ") for p in split_message(sentences, limit=120)[:-1])
    words = " ".join(f"w{i}" for i in range(200))
    parts = split_message(words, limit=100)
    assert all(p.endswith(" ") and not p.startswith(" ") for p in parts[:-1])


def test_keeps_a_code_block_whole_when_it_fits() -> None:
    code = "```python\n" + "\n".join(f"x = {i}" for i in range(20)) + "\n```"
    text = "Intro. " * 10 + "\n\n" + code + "\n\nOutro."
    parts = split_message(text, limit=200)
    assert len(parts) == 2
    assert parts[1].startswith(code)


def test_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"value_{i} = compute({i})" for i in range(100))
    text = f"Here:\n\n```python\n{code}\n```\n\nDone."
    parts = split_parts(text, limit=300)
    assert len(parts) > 3
    inner = [p for p in parts if p.head]
    assert inner
    for part in inner:
        assert part.head == "```python\n"
    for before, after in itertools.pairwise(parts):
        assert bool(before.tail) == bool(after.head)
        if before.tail:
            assert before.text.endswith("```")
            assert not before.text[: -len(before.tail)].endswith("```python\n")


def test_text_without_spaces_is_cut_hard() -> None:
    text = "x" * 1000
    parts = split_message(text, limit=300)
    assert "".join(parts) == text
    assert all(len(p) <= 300 for p in parts)


def test_escaped_characters_count_as_slack_counts_them() -> None:
    assert slack_length("a&b<c>") == 6 + 4 + 3 + 3
    parts = split_message("& " * 400, limit=100)
    assert all(slack_length(p) <= 100 for p in parts)


def test_default_limit_leaves_room_under_slack_limits() -> None:
    assert 2000 <= MESSAGE_LIMIT <= 3500


def test_rejects_a_tiny_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_message("text", limit=5)


# -- properties ---------------------------------------------------------------------------

_tokens = st.sampled_from(
    [
        "word",
        "longerword",
        "a",
        "x" * 37,
        " ",
        " ",
        "\n",
        "\n\n",
        ". ",
        "! ",
        "```",
        "```python\n",
        "\n```\n",
        "````\n",
        "`",
        "&",
        "<",
        ">",
        "- item\n",
        "  indented\n",
        "1. ",
    ]
)
_texts = st.one_of(
    st.lists(_tokens, max_size=250).map("".join),
    st.text(max_size=600),
)
_limits = st.integers(min_value=40, max_value=400)


def _check_structure(text: str, parts: list[Part], limit: int) -> None:
    assert (not parts) == (not text)
    position = 0
    for i, part in enumerate(parts):
        assert slack_length(part.text) <= limit
        assert part.start == position
        assert part.end > part.start
        assert part.text == part.head + text[part.start : part.end] + part.tail
        assert part.head == "" or _HEAD.fullmatch(part.head)
        assert part.tail == "" or _TAIL.fullmatch(part.tail)
        if i:
            assert bool(part.head) == bool(parts[i - 1].tail)
        position = part.end
    assert position == len(text)
    if parts:
        assert parts[-1].tail == ""


@given(_texts, _limits)
def test_parts_rejoin_to_the_text_and_fit(text: str, limit: int) -> None:
    parts = split_parts(text, limit)
    _check_structure(text, parts, limit)
    # Modulo the fences reopened and closed at cuts, the parts are the text.
    bodies = [p.text[len(p.head) : len(p.text) - len(p.tail)] for p in parts]
    assert "".join(bodies) == text
    assert [p.text for p in parts] == split_message(text, limit)


@given(_texts, _limits, st.data())
def test_split_is_stable_as_text_grows(text: str, limit: int, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    early, late = split_parts(text[:cut], limit), split_parts(text, limit)
    finished = early[:-1]
    assert late[: len(finished)] == finished


@given(st.lists(_tokens, max_size=250).map("".join))
def test_default_limit_parts_fit(text: str) -> None:
    for part in split_message(text * 8):
        assert slack_length(part) <= MESSAGE_LIMIT
