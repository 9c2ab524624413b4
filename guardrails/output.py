"""What the model says, made safe to post: no channel-wide pings, no secrets, no copy of
the system prompt. Runs on every streamed update, so it is plain regex work."""

from __future__ import annotations

from collections.abc import Callable

import regex

MAX_USER_MENTIONS = 5
WITHHELD = "[system prompt withheld]"
_ZWSP = "\u200b"
# Slack special mentions and Teams <at> tags, plus the plain-text forms.
_SLACK_SPECIAL = regex.compile(r"<!(channel|here|everyone|subteam\^[^>|]+)(\|[^>]*)?>")
_PLAIN_SPECIAL = regex.compile(
    r"(?<![\w@])@(channel|here|everyone|all|general)\b", regex.IGNORECASE
)
_TEAMS_AT = regex.compile(r"</?at>", regex.IGNORECASE)
_USER_MENTION = regex.compile(r"<@([A-Z0-9]+)(\|[^>]*)?>")
_SENTENCE = regex.compile(r"[^.!?\n]{40,}[.!?]?")


def neutralize_mentions(text: str) -> str:
    text = _SLACK_SPECIAL.sub(lambda m: f"@{_ZWSP}{m.group(1).split('^')[0]}", text)
    text = _PLAIN_SPECIAL.sub(lambda m: f"@{_ZWSP}{m.group(1)}", text)
    text = _TEAMS_AT.sub("", text)
    if len(set(_USER_MENTION.findall(text))) > MAX_USER_MENTIONS:
        text = _USER_MENTION.sub(f"@{_ZWSP}someone", text)
    return text


def withhold_system_prompt(text: str, system_prompt: str) -> str:
    """Replace any sentence of 40+ characters copied from the system prompt."""
    flat = " ".join(text.split())
    changed = False
    for sentence in _SENTENCE.findall(" ".join(system_prompt.split())):
        sentence = sentence.strip()
        if len(sentence) >= 40 and sentence in flat:
            flat = flat.replace(sentence, WITHHELD)
            changed = True
    return flat if changed else text


def sanitize_answer(
    text: str,
    *,
    system_prompt: str,
    redact_secrets: Callable[[str], str] = lambda t: t,
) -> str:
    return withhold_system_prompt(neutralize_mentions(redact_secrets(text)), system_prompt)
