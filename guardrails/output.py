"""The model's answer made safe to show (OWASP LLM05, LLM02, LLM07).

- no mass pings: Slack <!channel> <!here> <!everyone> <!subteam^…>, Teams <at>…</at>, and the
  plain "@channel", "@here", "@everyone", "@General", "@team" become "@\u200bchannel" etc.: still
  readable, but a zero-width space after "@" means no platform treats them as mentions;
- at most `max_user_mentions` distinct Slack users (<@U…>) are pinged; later ones are shown
  as plain names;
- secrets go through the injected `redact_secrets` (the privacy package provides it);
- a verbatim copy of the system prompt (whitespace aside) becomes "[system prompt withheld]".

It runs on every streamed update. With `partial=True` it also holds back a tail that could
still change meaning (text that may be the start of an echoed prompt, a word still being
written, an unclosed "<", an "@chan" that may become "@channel"), so each partial result is a
prefix of the final one and a stream that only appends never has to take back what it
showed. That holds because every stage is local (a match is decided by the text up to a
bounded distance past its start) and its hold-back covers that distance: keep it so.
"""

from __future__ import annotations

import functools
import math
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

WITHHELD = "[system prompt withheld]"
MAX_USER_MENTIONS = 5
ECHO_CHARS = 40  # a copied run this long is a leak, whatever the prompt's length
MIN_ECHO_CHARS = 20  # below this, common phrases would match by chance
_ZWSP = "\u200b"

# The closing ">" is optional: an unclosed "<!channel" is neutralized too, in case a
# client is lenient about it.
_BROADCAST = re.compile(r"<!(channel|here|everyone|group)(?:\|[^<>\n]{0,200})?>?", re.IGNORECASE)
_SUBTEAM = re.compile(r"<!subteam\^[^<>|\n]{1,32}(?:\|@?([^<>\n]{0,200}))?>?", re.IGNORECASE)
_TEAMS_AT_OPEN = r"<at(?:[ \t][^<>\n]{0,200})?>"
_TEAMS_AT_CLOSE = r"</at[ \t]{0,8}>"
_TEAMS_AT = re.compile(_TEAMS_AT_OPEN + r"([^<\n]{0,200})" + _TEAMS_AT_CLOSE, re.IGNORECASE)
_USER = re.compile(r"<@([A-Z0-9]{2,24})(?:\|([^<>\n]{0,200}))?>")
_MASS_WORDS = ("channel", "here", "everyone", "general", "team")
# No look-ahead: "@channels" is neutralized too (harmless), and a match never depends on
# text after it, which keeps streaming stable.
_PLAIN_MASS = re.compile(r"(?<![\w@.+-])@(" + "|".join(_MASS_WORDS) + ")", re.IGNORECASE)
# <at> or </at> left over, not a pair with a name between: dropped, so that no platform
# pairs them up with something else.
_STRAY_AT = re.compile(r"</?at(?:[ \t][^<>\n]{0,200})?>", re.IGNORECASE)

# What partial text may still turn into: a "<" not closed yet, an <at> tag not closed yet,
# an "@" followed by the start of a mass word. The bounds exceed the longest match above:
# past them (or past a line break) nothing can match any more, so the text is released.
_OPEN_LT = re.compile(r"<[^<>\n]{0,300}\Z")
_OPEN_AT_TAG = re.compile(
    _TEAMS_AT_OPEN + r"(?:(?!" + _TEAMS_AT_CLOSE + r")[^\n]){0,300}\Z", re.IGNORECASE
)
_TAIL = 1024
_LAST_WORD = re.compile(r"\S+\Z")
_OPEN_MASS = re.compile(r"(?<![\w@.+-])@([A-Za-z]{0,8})\Z")


def _identity(text: str) -> str:
    return text


def sanitize_answer(
    text: str,
    *,
    system_prompt: str,
    redact_secrets: Callable[[str], str] = _identity,
    partial: bool = False,
    max_user_mentions: int = MAX_USER_MENTIONS,
) -> str:
    """`text` as it may be shown: prompt echo withheld, secrets redacted, no mass pings.

    `partial=True` for a streamed prefix: the result is then a prefix of what the complete
    text gives, provided `redact_secrets` judges a word only once it is whole (it sees no
    unfinished last word here). Mentions are handled last, so no redactor can bring one back.
    """
    shown = withhold_system_prompt(text, system_prompt, partial=partial)
    if partial:
        shown = shown[: _whole_words(shown)]
    return neutralize_mentions(
        redact_secrets(shown), max_user_mentions=max_user_mentions, partial=partial
    )


def _whole_words(text: str) -> int:
    """Length of `text` without its last word if that may still grow (a token half-typed)."""
    return len(text) if not text or text[-1].isspace() else len(_LAST_WORD.split(text)[0])


# -- mentions ------------------------------------------------------------------------------


def _quiet(name: str) -> str:
    return f"@{_ZWSP}{name.strip() or 'someone'}"


def neutralize_mentions(
    text: str, *, max_user_mentions: int = MAX_USER_MENTIONS, partial: bool = False
) -> str:
    """No mass mentions at all, and pings for the first `max_user_mentions` users only.

    Two stages, Teams tags then Slack forms, each holding back (when `partial`) what it may
    not judge yet. Dropping a stray <at> could join "<!" and "channel": the Slack stage
    runs on the result, so that is neutralized too.
    """
    if "@" not in text and "<" not in text:
        return text  # the common case: nothing to look at
    if partial:
        text = text[: _open_from(text, _OPEN_AT_TAG, _OPEN_LT)]
    text = _STRAY_AT.sub("", _TEAMS_AT.sub(lambda m: _quiet(m[1]), text))
    if partial:
        text = text[: _open_mass(text, _open_from(text, _OPEN_LT))]
    text = _BROADCAST.sub(lambda m: _quiet(m[1].lower()), text)
    text = _SUBTEAM.sub(lambda m: _quiet(m[1] or "group"), text)
    pinged: set[str] = set()

    def cap(match: re.Match[str]) -> str:
        user = match[1]
        if user in pinged or len(pinged) < max_user_mentions:
            pinged.add(user)
            return match[0]
        return _quiet(match[2] or user)

    text = _USER.sub(cap, text)
    return _PLAIN_MASS.sub(lambda m: _quiet(m[1]), text)


def _open_from(text: str, *patterns: re.Pattern[str]) -> int:
    """Where the earliest construct that is still open at the end of `text` starts."""
    end = len(text)
    tail = max(0, end - _TAIL)  # longer than any open construct: no need to scan it all
    for pattern in patterns:
        if match := pattern.search(text, tail):
            end = min(end, match.start())
    return end


def _open_mass(text: str, end: int) -> int:
    """`end`, or where an "@" starts that the next letters may turn into "@channel"."""
    match = _OPEN_MASS.search(text, max(0, end - 16), end)
    if match and any(w.startswith(match[1].lower()) and w != match[1].lower() for w in _MASS_WORDS):
        return match.start()
    return end


# -- system prompt echo --------------------------------------------------------------------

_SPACE_RUN = re.compile(r"\s+")
_NOT_FOLDED = re.compile(r"[^\S ]| \s")  # whitespace other than single spaces


@dataclass(frozen=True, slots=True)
class _Prompt:
    text: str  # whitespace collapsed
    threshold: int  # shortest copied run that counts as an echo
    blocks: tuple[tuple[int, str], ...]  # (offset, block): every echo contains one of them


@functools.lru_cache(maxsize=16)
def _prepare(system_prompt: str) -> _Prompt | None:
    text = _SPACE_RUN.sub(" ", system_prompt).strip()
    if not text:
        return None
    # >= ECHO_CHARS, or >= half the prompt; a prompt shorter than MIN_ECHO_CHARS only whole.
    threshold = min(ECHO_CHARS, max(math.ceil(len(text) / 2), min(len(text), MIN_ECHO_CHARS)))
    # Any run of `threshold` prompt characters contains a whole block of this size that
    # starts at a multiple of it, so finding blocks finds every echo.
    size = (threshold + 1) // 2
    blocks = tuple((i, text[i : i + size]) for i in range(0, len(text) - size + 1, size))
    return _Prompt(text, threshold, blocks)


class _Folded:
    """`text` with whitespace runs collapsed to one space, and the way back to `text`."""

    def __init__(self, text: str) -> None:
        if not _NOT_FOLDED.search(text):
            self.text = text
            self._starts: list[int] = [0]
            self._origins: list[int] = [0]
            self._runs: dict[int, int] = {}
            return
        parts: list[str] = []
        self._starts, self._origins, self._runs = [], [], {}
        folded = origin = 0
        for run in _SPACE_RUN.finditer(text):
            # the text before the run, then the run as one space
            self._starts.append(folded)
            self._origins.append(origin)
            parts.append(text[origin : run.start()])
            folded += run.start() - origin
            self._starts.append(folded)
            self._origins.append(run.start())
            self._runs[folded] = run.end() - run.start()
            parts.append(" ")
            folded += 1
            origin = run.end()
        self._starts.append(folded)
        self._origins.append(origin)
        parts.append(text[origin:])
        self.text = "".join(parts)

    def start(self, i: int) -> int:
        """Where folded position `i` starts in the original."""
        k = bisect_right(self._starts, i) - 1
        return self._origins[k] + (i - self._starts[k])

    def end(self, i: int) -> int:
        """Where folded span ending (exclusive) at `i` ends in the original."""
        if i == 0:
            return 0
        return self.start(i - 1) + self._runs.get(i - 1, 1)


def _common_prefix(a: str, i: int, b: str, j: int) -> int:
    lo, hi = 0, min(len(a) - i, len(b) - j)
    while lo < hi:  # binary search on slice equality: C speed, O(n log n)
        mid = (lo + hi + 1) // 2
        if a[i : i + mid] == b[j : j + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, i: int, b: str, j: int) -> int:
    lo, hi = 0, min(i, j)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[i - mid : i] == b[j - mid : j]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _echoes(answer: str, prompt: _Prompt) -> list[tuple[int, int]]:
    """Merged spans of `answer` copied from the prompt in runs of >= threshold characters."""
    spans: list[tuple[int, int]] = []
    reach: dict[int, int] = {}  # alignment (answer pos - prompt pos) -> end of its last match
    for offset, block in prompt.blocks:
        at = answer.find(block)
        while at != -1:
            if reach.get(at - offset, -1) <= at:  # not inside a match already extended
                left = at - _common_suffix(answer, at, prompt.text, offset)
                right = at + _common_prefix(answer, at, prompt.text, offset)
                reach[at - offset] = right
                if right - left >= prompt.threshold:
                    spans.append((left, right))
            at = answer.find(block, at + 1)
    merged: list[tuple[int, int]] = []
    for left, right in sorted(spans):
        if merged and left <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], right))
        else:
            merged.append((left, right))
    return merged


def _prompt_suffix(answer: str, prompt: _Prompt) -> int:
    """Length of the longest end of `answer` that occurs in the prompt (may still grow)."""
    lo, hi = 0, min(len(answer), len(prompt.text))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if answer[len(answer) - mid :] in prompt.text:
            lo = mid
        else:
            hi = mid - 1
    return lo


def withhold_system_prompt(text: str, system_prompt: str, *, partial: bool = False) -> str:
    """Replace copies of the system prompt (whitespace-insensitive) by WITHHELD.

    With `partial`, text that might be the start of a copy is held back, not shown.
    """
    prompt = _prepare(system_prompt)
    if prompt is None or not text:
        return text
    folded = _Folded(text)
    echoes = _echoes(folded.text, prompt)
    cut = len(folded.text) - (_prompt_suffix(folded.text, prompt) if partial else 0)
    if folded.text[cut:].startswith(" ") and not any(a <= cut < b for a, b in echoes):
        cut += 1  # a copy starting here would begin after this space (see below)
    out: list[str] = []
    shown = 0  # original position up to which `out` covers
    for left, right in echoes:
        if left >= cut:
            break
        # Keep the spaces around a copy. Not a trailing one that reaches the held-back
        # tail: the copy may go on there, and a shown space could not be taken back.
        if folded.text[left] == " ":
            left += 1
        if folded.text[right - 1] == " " and (right < cut or not partial):
            right -= 1
        start, end = folded.start(left), folded.end(min(right, cut))
        out.append(text[shown:start])
        out.append(WITHHELD)
        shown = end
    out.append(text[shown : folded.end(cut)])
    return "".join(out)
