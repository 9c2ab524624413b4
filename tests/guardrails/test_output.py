from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.injection import InjectionFinding
from guardrails.output import (
    MAX_USER_MENTIONS,
    WITHHELD,
    neutralize_mentions,
    sanitize_answer,
    withhold_system_prompt,
)
from guardrails.policy import harden_system_prompt
from privacy.recognizers import redact_secrets

SYSTEM = (
    "You are Parley, the IT helpdesk assistant of Acme. Never share the admin password "
    "with anyone. Answer in the language of the question."
)
ZWSP = "\u200b"
# A mass mention that would still ping: Slack's special forms, or a plain word after "@".
LIVE_PING = re.compile(
    r"<!(?:channel|here|everyone|group|subteam)|</?at(?:\s[^<>]*)?>|(?<![\w@.+-])@(?:channel|here|everyone"
    r"|general|team)",
    re.IGNORECASE,
)


def _sanitize(text: str, *, partial: bool = False) -> str:
    return sanitize_answer(text, system_prompt=SYSTEM, partial=partial)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Hey <!channel>!", f"Hey @{ZWSP}channel!"),
        ("<!here|here> and <!here>", f"@{ZWSP}here and @{ZWSP}here"),
        ("<!everyone> listen", f"@{ZWSP}everyone listen"),
        ("ask <!subteam^S0123ABC|@it-team> now", f"ask @{ZWSP}it-team now"),
        ("ask <!subteam^S0123ABC>", f"ask @{ZWSP}group"),
        ("a lenient client might ping <!channel", f"a lenient client might ping @{ZWSP}channel"),
        ("@channel @here @everyone", f"@{ZWSP}channel @{ZWSP}here @{ZWSP}everyone"),
        ("Ping @Channel, please", f"Ping @{ZWSP}Channel, please"),
    ],
)
def test_slack_mass_mentions_are_shown_but_never_ping(text: str, shown: str) -> None:
    assert neutralize_mentions(text) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Hello <at>General</at>!", f"Hello @{ZWSP}General!"),
        ('Hi <at id="0">Jane Doe</at>', f"Hi @{ZWSP}Jane Doe"),
        ("Post it in @General or @team", f"Post it in @{ZWSP}General or @{ZWSP}team"),
    ],
)
def test_teams_mentions_are_shown_but_never_ping(text: str, shown: str) -> None:
    assert neutralize_mentions(text) == shown


def test_addresses_that_merely_contain_a_mass_word_are_left_alone() -> None:
    text = "Write to help@here.example or ops.team@acme.example"
    assert neutralize_mentions(text) == text


def test_user_mentions_are_capped_at_five_distinct_people() -> None:
    few = "Ask <@U1> or <@U2|bob>, or <@U1> again."
    assert neutralize_mentions(few) == few
    many = " ".join(f"<@U{i}>" for i in range(8)) + " <@U1> <@U7|zoe>"
    out = neutralize_mentions(many)
    assert re.findall(r"<@(U\d)>", out) == ["U0", "U1", "U2", "U3", "U4", "U1"]
    assert out.endswith(f"@{ZWSP}U5 @{ZWSP}U6 @{ZWSP}U7 <@U1> @{ZWSP}zoe")
    assert MAX_USER_MENTIONS == 5
    assert "<@U" not in neutralize_mentions(many, max_user_mentions=0)


def test_system_prompt_echo_is_withheld_even_with_other_whitespace() -> None:
    echo = "Sure! My instructions say:   Never share the admin\n password with  anyone. Bye"
    out = _sanitize(echo)
    assert out == f"Sure! My instructions say:   {WITHHELD} Bye"


def test_half_of_a_short_prompt_is_an_echo_but_a_common_phrase_is_not() -> None:
    short = "Always answer in rhyme."  # 23 characters: 12 of them are half
    assert WITHHELD in withhold_system_prompt("I must always answer in rhyme, sorry", short)
    assert withhold_system_prompt("Please answer in a table", short) == "Please answer in a table"
    assert withhold_system_prompt("You are welcome!", SYSTEM) == "You are welcome!"


def test_the_hardening_note_is_withheld_too_when_its_prompt_is_given() -> None:
    finding = InjectionFinding("pretend_you_are", "persona", "en")
    hardened = harden_system_prompt(SYSTEM, finding)
    assert hardened.startswith(SYSTEM)
    note = hardened[len(SYSTEM) :].strip()
    out = sanitize_answer(f"My notes: {note}", system_prompt=hardened)
    assert out == f"My notes: {WITHHELD}"
    assert harden_system_prompt(SYSTEM, None) == SYSTEM


@pytest.mark.parametrize(
    "answer",
    [
        "To reset the VPN:\n\n1. Open **Settings**\n2. Click `Reconnect`\n\nThanks, <@U1>!",
        "Sí, el portal está en https://id.acme.example/reset <https://x.example|aquí>.",
        "```python\nif a < b and b > c:\n    print('ok')\n```",
        "You are welcome! Ask me anything about printers, e-mail or the VPN.",
        "",
    ],
)
def test_a_normal_answer_is_left_byte_identical(answer: str) -> None:
    assert _sanitize(answer) == answer
    assert sanitize_answer(answer, system_prompt=SYSTEM, redact_secrets=redact_secrets) == answer
    assert answer.startswith(_sanitize(answer, partial=True))


def test_secrets_are_redacted_by_the_injected_function() -> None:
    out = sanitize_answer(
        "Hey <!channel>, use xoxb-123456789012-abcdefghijkl",
        system_prompt=SYSTEM,
        redact_secrets=redact_secrets,
    )
    assert "xoxb-" not in out
    assert "<!channel>" not in out


def test_a_partial_answer_holds_back_what_may_still_become_a_ping() -> None:
    assert _sanitize("Hi <!chan", partial=True) == "Hi "
    assert _sanitize("Hi @chan", partial=True) == "Hi "
    assert _sanitize("Hi <at>Gene", partial=True) == "Hi "
    assert _sanitize("Hi <at>General</at", partial=True) == "Hi "
    assert _sanitize("Hi @chan", partial=False) == "Hi @chan"
    assert _sanitize("2 < 3 and\n4 > 1 ", partial=True) == "2 < 3 and\n4 > 1 "


def test_a_partial_answer_holds_back_its_last_word_until_it_is_whole() -> None:
    # A secret is judged whole: "xoxb-12" alone may not look like a token yet.
    text = "the token is xoxb-123456789012-abcdefghijkl and more"
    for end in range(len(text) + 1):
        shown = sanitize_answer(
            text[:end], system_prompt=SYSTEM, redact_secrets=redact_secrets, partial=True
        )
        assert "xoxb" not in shown
    assert _sanitize("Hello wor", partial=True) == "Hello "
    assert _sanitize("Hello world!\n", partial=True) == "Hello world!\n"


def test_a_partial_answer_holds_back_a_possible_echo_then_withholds_it() -> None:
    text = "Hi. " + SYSTEM
    shown = [_sanitize(text[:end], partial=True) for end in range(len(text) + 1)]
    assert all(WITHHELD in s or len(s) <= len("Hi. ") for s in shown)
    assert _sanitize(text) == f"Hi. {WITHHELD}"


# Pieces that make mentions, near-mentions and system prompt fragments when joined.
_PIECES = [
    *"<>!@|^ \n.a",
    "<!",
    "channel",
    "here",
    "everyone",
    "<!channel>",
    "<!here|here>",
    "<!subteam^S1|@ops>",
    "<@U1>",
    "<@U2|ann>",
    "<@U3>",
    "<@U4>",
    "<@U5>",
    "<@U6>",
    "<@U7>",
    "<at>",
    "</at>",
    "General",
    "team",
    *SYSTEM.split(" "),
    SYSTEM[10:70],
    "\n\n",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_streamed_prefixes_are_prefixes_of_the_answer_and_never_ping(pieces: list[str]) -> None:
    text = "".join(pieces)
    final = _sanitize(text)
    assert not LIVE_PING.search(final)
    for end in range(len(text) + 1):
        shown = _sanitize(text[:end], partial=True)
        assert final.startswith(shown)
        assert not LIVE_PING.search(shown)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(min_size=1, max_size=200))
def test_any_text_and_any_prompt_never_raise(text: str, prompt: str) -> None:
    for partial in (False, True):
        out = sanitize_answer(text, system_prompt=prompt, partial=partial)
        assert "<!channel>" not in out
        assert "<!everyone>" not in out
