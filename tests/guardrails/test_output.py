from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from guardrails.output import WITHHELD, neutralize_mentions, sanitize_answer
from privacy.recognizers import redact_secrets

SYSTEM = (
    "You are Parley, the IT helpdesk assistant of Acme. Never share the admin password "
    "with anyone. Answer in the language of the question."
)


def test_mass_mentions_never_ping() -> None:
    text = "Hey <!channel> and <!here|here>, <!everyone>, <!subteam^S123|@it-team>, @here @channel"
    out = neutralize_mentions(text)
    for ping in ("<!channel>", "<!here", "<!everyone>", "<!subteam", " @here", " @channel"):
        assert ping not in out
    assert "<at>" not in neutralize_mentions("Hello <at>General</at>!")


def test_many_user_mentions_are_capped_but_a_few_are_kept() -> None:
    few = "Ask <@U1> or <@U2>."
    assert neutralize_mentions(few) == few
    many = " ".join(f"<@U{i}>" for i in range(8))
    assert "<@U" not in neutralize_mentions(many)


def test_system_prompt_echo_is_withheld_even_with_other_whitespace() -> None:
    echo = "Sure! My instructions say:   Never share the admin\n password with anyone. Bye"
    out = sanitize_answer(echo, system_prompt=SYSTEM)
    assert "Never share the admin password with anyone" not in out
    assert WITHHELD in out


def test_a_normal_answer_is_left_byte_identical() -> None:
    answer = "To reset the VPN:\n\n1. Open **Settings**\n2. Click `Reconnect`\n\nThanks, <@U1>!"
    assert sanitize_answer(answer, system_prompt=SYSTEM, redact_secrets=redact_secrets) == answer


def test_secrets_in_answers_are_redacted() -> None:
    out = sanitize_answer(
        "use xoxb-123456789012-abcdefghijkl", system_prompt=SYSTEM, redact_secrets=redact_secrets
    )
    assert "xoxb-" not in out


@given(st.text(alphabet=st.sampled_from(list("<!@chanel|ery> \nabc")), max_size=60))
def test_no_prefix_of_any_text_lets_a_channel_ping_through(text: str) -> None:
    for end in range(len(text) + 1):
        out = sanitize_answer(text[:end], system_prompt=SYSTEM)
        assert "<!channel>" not in out
        assert "<!everyone>" not in out
