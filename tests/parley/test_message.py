from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parley.message import parse_thread_key, thread_key

_ID = st.text(st.characters(codec="ascii", exclude_characters=":"), min_size=1, max_size=12)
_TEAMS_CHANNEL = st.builds(lambda a, b: f"{a}:{b}", _ID, _ID)


def test_thread_keys_of_each_platform_are_read_back() -> None:
    cases = [
        ("slack", "T1", "C1", "1700000000.000100"),
        ("teams", "tenant", "19:abc@thread.tacv2", "1700000000123"),
        ("teams", "tenant", "a:1xyz", "a:1xyz"),
        ("console", "local", "console", "4f2c"),
    ]
    for parts in cases:
        assert parse_thread_key(thread_key(*parts)) == parts


@given(_ID, _ID, st.one_of(_ID, _TEAMS_CHANNEL), _ID)
def test_a_thread_without_colons_is_read_back(
    platform: str, tenant: str, channel: str, thread: str
) -> None:
    assert parse_thread_key(thread_key(platform, tenant, channel, thread)) == (
        platform,
        tenant,
        channel,
        thread,
    )


@given(_ID, _ID, st.one_of(_ID, _TEAMS_CHANNEL))
def test_a_conversation_that_is_its_own_thread_is_read_back(
    platform: str, tenant: str, channel: str
) -> None:
    assert parse_thread_key(thread_key(platform, tenant, channel, channel)) == (
        platform,
        tenant,
        channel,
        channel,
    )
