"""Convert the Markdown a model writes into Slack mrkdwn (for chat.postMessage / chat.update).

Formatting inside code (inline spans, fenced blocks) is left alone. Slack's three reserved
characters are escaped everywhere, code included: Slack reads `<...>` as links, mentions
and broadcasts (<!channel>) in any part of the text, so model output can never ping anyone.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FENCE = re.compile(r" {0,3}(`{3,})[^`]*")
_CLOSE = re.compile(r" {0,3}(`{3,})\s*")
_TABLE_ROW = re.compile(r"\s*\|.*\|\s*")
_TABLE_RULE = re.compile(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*")
_HEADING = re.compile(r" {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*")
_RULE = re.compile(r" {0,3}([-*_])(?:\s*\1){2,}\s*")
_BULLET = re.compile(r"(\s*)[-*+]\s+(?:\[([ xX])\]\s+)?(.*)")
_QUOTE = re.compile(r"(\s*(?:>\s?)+)(.*)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[([^\]\n]+)\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^<>\s]+)>")
_EMPHASIS = re.compile(
    r"\*\*\*(?=\S)(?P<bi>.+?)(?<=\S)\*\*\*"
    r"|\*\*(?=\S)(?P<b1>.+?)(?<=\S)\*\*"
    r"|(?<!\w)__(?=\S)(?P<b2>.+?)(?<=\S)__(?!\w)"
    r"|(?<![\w*])\*(?=[^\s*])(?P<i1>.+?)(?<=[^\s*])\*(?![\w*])"
    r"|(?<!\w)_(?=[^\s_])(?P<i2>.+?)(?<=[^\s_])_(?!\w)"
    r"|~~(?=\S)(?P<s>.+?)(?<=\S)~~"
)
_BACKSLASHED = re.compile(r"\\([!-/:-@\[-`{-~])")
_PLACEHOLDER = "\x00{}\x00"
_STASHED = re.compile("\x00(\\d+)\x00")
_RULE_LINE = "\u2500" * 12


def escape(text: str) -> str:
    """Escape Slack's reserved characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Render Markdown as Slack mrkdwn, line by line, leaving code unformatted."""
    out: list[str] = []
    lines = markdown.split("\n")
    fence: str | None = None  # the marker of the open code block
    i = 0
    while i < len(lines):
        line = lines[i]
        if fence is not None:
            close = _CLOSE.fullmatch(line)
            if close and len(close.group(1)) >= len(fence):
                fence = None
                out.append("```")
            else:
                out.append(escape(line))
        elif opener := _FENCE.fullmatch(line):
            # Slack shows a language tag as a first line of code: drop it.
            fence = opener.group(1)
            out.append("```")
        elif _is_table(lines, i):
            # Slack has no tables; a code block at least keeps the columns aligned.
            end = i
            while end < len(lines) and _TABLE_ROW.fullmatch(lines[end]):
                end += 1
            out.extend(["```", *(escape(row) for row in lines[i:end]), "```"])
            i = end
            continue
        else:
            out.append(_block_line(line))
        i += 1
    return "\n".join(out)


def _is_table(lines: list[str], i: int) -> bool:
    return (
        i + 1 < len(lines)
        and _TABLE_ROW.fullmatch(lines[i]) is not None
        and _TABLE_RULE.fullmatch(lines[i + 1]) is not None
        and "-" in lines[i + 1]
    )


def _block_line(line: str) -> str:
    if heading := _HEADING.fullmatch(line):
        title = re.sub(r"\*\*|__", "", heading.group(1))  # bold inside bold reads badly
        return f"*{_inline(title)}*" if title else ""
    if _RULE.fullmatch(line):
        return _RULE_LINE
    if bullet := _BULLET.fullmatch(line):
        indent, task, rest = bullet.groups()
        box = "" if task is None else ("\u2611 " if task in "xX" else "\u2610 ")
        return f"{indent}\u2022 {box}{_inline(rest)}"
    if quote := _QUOTE.fullmatch(line):
        # The quote marker stays a raw ">": Slack renders it as a block quote.
        marks, rest = quote.groups()
        return f"{marks}{_block_line(rest)}"
    return _inline(line)


def _inline(text: str) -> str:
    """Convert one line of prose; code spans are escaped but not formatted."""
    out: list[str] = []
    pos = 0
    for span in _CODE_SPAN.finditer(text):
        out.append(_prose(text[pos : span.start()]))
        out.append(escape(span.group(0)))
        pos = span.end()
    out.append(_prose(text[pos:]))
    return "".join(out)


def _prose(text: str) -> str:
    # Finished pieces (links, backslash-escaped characters) are set aside behind
    # placeholders so that escaping and emphasis never touch them.
    done: list[str] = []

    def stash(rendered: str) -> str:
        done.append(rendered)
        return _PLACEHOLDER.format(len(done) - 1)

    def link(m: re.Match[str]) -> str:
        label = _emphasis(escape(m.group(1)))
        return stash(f"<{_safe_url(m.group(2))}|{label}>")

    def restore(s: str) -> str:
        return _STASHED.sub(lambda m: restore(done[int(m.group(1))]), s)

    text = text.replace("\x00", "")
    text = _BACKSLASHED.sub(lambda m: stash(escape(m.group(1))), text)
    text = _LINK.sub(link, text)
    text = _AUTOLINK.sub(lambda m: stash(f"<{_safe_url(m.group(1))}>"), text)
    return restore(_emphasis(escape(text)))


def _safe_url(url: str) -> str:
    # "|" and ">" would end Slack's <url|label> early.
    return url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")


def _emphasis(text: str) -> str:
    return _EMPHASIS.sub(_convert, text)


def _convert(m: re.Match[str]) -> str:
    wrap: dict[str, Callable[[str], str]] = {
        "bi": lambda s: f"*_{s}_*",
        "b1": lambda s: f"*{s}*",
        "b2": lambda s: f"*{s}*",
        "i1": lambda s: f"_{s}_",
        "i2": lambda s: f"_{s}_",
        "s": lambda s: f"~{s}~",
    }
    name = m.lastgroup
    assert name is not None
    return wrap[name](_emphasis(m.group(name)))
