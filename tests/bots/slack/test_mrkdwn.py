from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.slack.mrkdwn import escape, to_mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("***both***", "*_both_*"),
        ("~~gone~~", "~gone~"),
        ("**bold with _italic_ inside**", "*bold with _italic_ inside*"),
        (
            "[the docs](https://example.com/a_b?x=1&y=2)",
            "<https://example.com/a_b?x=1&y=2|the docs>",
        ),
        ("[**bold** link](https://e.com)", "<https://e.com|*bold* link>"),
        ("see <https://e.com/x>", "see <https://e.com/x>"),
        ("# Heading", "*Heading*"),
        ("### Deep **heading** ###", "*Deep heading*"),
        ("- one\n* two\n+ three", "\u2022 one\n\u2022 two\n\u2022 three"),
        ("  - nested", "  \u2022 nested"),
        ("- [x] done\n- [ ] todo", "\u2022 \u2611 done\n\u2022 \u2610 todo"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("> quoted **text**", "> quoted *text*"),
        ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
        ("<!channel> hello", "&lt;!channel&gt; hello"),
        ("snake_case_name and 2 * 3 * 4", "snake_case_name and 2 * 3 * 4"),
        ("\\*not italic\\*", "*not italic*"),
        ("---", "\u2500" * 12),
    ],
)
def test_converts(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_inline_code_is_not_formatted_but_escaped() -> None:
    assert to_mrkdwn("run `a **b** <c>` now") == "run `a **b** &lt;c&gt;` now"


def test_fenced_code_is_not_formatted_and_loses_its_language_tag() -> None:
    markdown = "Before\n```python\nx = a**2  # *not* _italic_\nif a < b: pass\n```\nAfter **b**"
    assert to_mrkdwn(markdown) == (
        "Before\n```\nx = a**2  # *not* _italic_\nif a &lt; b: pass\n```\nAfter *b*"
    )


def test_unclosed_fence_keeps_the_rest_as_code() -> None:
    assert to_mrkdwn("```\n**still code**") == "```\n**still code**"


def test_tables_are_wrapped_in_a_code_block() -> None:
    markdown = "Table:\n| a | b |\n|---|:-:|\n| **1** | 2 |\nafter"
    assert to_mrkdwn(markdown) == "Table:\n```\n| a | b |\n|---|:-:|\n| **1** | 2 |\n```\nafter"


def test_pipe_in_a_link_url_cannot_break_the_link() -> None:
    assert to_mrkdwn("[x](https://e.com/a|b)") == "<https://e.com/a%7Cb|x>"


# -- properties ---------------------------------------------------------------------------

_prose = st.text(alphabet=st.sampled_from(list("abc XY*_~`#->&<.\n|[]()!\\")), max_size=300)
_code = st.text(alphabet=st.characters(blacklist_characters="`\r"), max_size=200)


@given(_prose)
def test_output_has_only_escaped_reserved_characters(markdown: str) -> None:
    out = to_mrkdwn(markdown)
    # Links are the only "<...>" the converter produces; nothing else may reach Slack raw.
    rest = re.sub(r"<https?://[^<>|\s]+(\|[^<>]*)?>", "", out)
    rest = re.sub(r"&(amp|lt|gt);", "", rest)
    assert "&" not in rest
    assert "<" not in rest
    # A raw ">" only as a block quote marker at the start of a line.
    for line in rest.split("\n"):
        assert ">" not in line.lstrip(" \t>")


@given(_code)
def test_fenced_code_only_gets_escaped(code: str) -> None:
    lines = code.split("\n")
    if any(re.fullmatch(r" {0,3}`{3,}.*", line) for line in lines):
        return
    assert to_mrkdwn(f"```\n{code}\n```") == f"```\n{escape(code)}\n```"


@given(st.text(alphabet=st.characters(blacklist_characters="`\\*_~[]#>-+|&<\r\x00"), max_size=200))
def test_plain_text_passes_through(text: str) -> None:
    lines = text.split("\n")
    if any(re.match(r"\s*\d+\.", line) for line in lines):
        return
    assert to_mrkdwn(text) == text
