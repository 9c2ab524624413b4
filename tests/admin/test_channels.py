from __future__ import annotations

import math

import pytest
from redis.asyncio import Redis

from admin.channels import (
    ChannelConfig,
    ChannelStore,
    Field,
    InvalidSetting,
    parse_max_tokens,
    parse_mode,
    parse_persona,
    parse_temperature,
)
from tests.support.config import make_settings
from workers import keys


@pytest.mark.parametrize("text", ["0", "0.3", "2", "1e0"])
def test_temperatures_in_range_are_accepted(text: str) -> None:
    assert parse_temperature(text) == float(text)


@pytest.mark.parametrize("text", ["-0.1", "2.01", "nan", "inf", "warm", ""])
def test_temperatures_out_of_range_say_what_is_allowed(text: str) -> None:
    with pytest.raises(InvalidSetting, match="from 0 to 2"):
        parse_temperature(text)


def test_max_tokens_must_leave_room_in_the_context() -> None:
    assert parse_max_tokens("400", context_tokens=8192) == 400
    for bad in ("0", "-5", "4097", "12.5", "lots"):
        with pytest.raises(InvalidSetting, match="from 1 to 4096"):
            parse_max_tokens(bad, context_tokens=8192)


def test_modes_and_personas_are_checked() -> None:
    assert parse_mode("all") == "all"
    with pytest.raises(InvalidSetting, match="mentions, all"):
        parse_mode("everything")
    assert parse_persona("  Be terse.\n") == "Be terse."
    with pytest.raises(InvalidSetting, match="empty"):
        parse_persona("   ")
    with pytest.raises(InvalidSetting, match="at most 4,000"):
        parse_persona("x" * 4001)


async def test_a_change_returns_the_old_value_and_none_restores_the_default(
    aredis: Redis,
) -> None:
    store = ChannelStore(aredis, make_settings())
    assert await store.load("slack", "T1", "C1") == ChannelConfig()
    assert await store.change("slack", "T1", "C1", Field.PERSONA, "Be terse.") is None
    assert await store.change("slack", "T1", "C1", Field.PERSONA, "Be kind.") == "Be terse."
    await store.change("slack", "T1", "C1", Field.TEMPERATURE, "0.2")
    config = await store.load("slack", "T1", "C1")
    assert (config.persona, config.temperature) == ("Be kind.", 0.2)
    assert await store.change("slack", "T1", "C1", Field.PERSONA, None) == "Be kind."
    assert (await store.load("slack", "T1", "C1")).persona is None
    # Settings persist: no TTL.
    assert await aredis.ttl(keys.channel_config("slack", "T1", "C1")) == -1
    # Channels are separate, by platform and tenant too.
    assert await store.load("slack", "T2", "C1") == ChannelConfig()
    assert await store.load("teams", "T1", "C1") == ChannelConfig()


async def test_the_policy_falls_back_to_the_deployments_defaults(aredis: Redis) -> None:
    settings = make_settings(
        default_channel_policy="deny", direct_messages="allow", temperature=0.7
    )
    store = ChannelStore(aredis, settings)
    policy = await store.resolve("slack", "T1", "C1", direct=False)
    assert not policy.enabled
    assert (await store.resolve("slack", "T1", "D1", direct=True)).enabled
    assert policy.system_prompt == settings.system_prompt
    assert policy.params.temperature == 0.7
    assert policy.params.max_new_tokens == settings.max_new_tokens

    await store.change("slack", "T1", "C1", Field.ENABLED, "1")
    await store.change("slack", "T1", "C1", Field.TEMPERATURE, "0")
    await store.change("slack", "T1", "C1", Field.MAX_TOKENS, "300")
    policy = await store.resolve("slack", "T1", "C1", direct=False)
    assert policy.enabled
    assert policy.params.temperature == 0.0, "0 is a value, not 'unset'"
    assert policy.params.max_new_tokens == 300


async def test_reads_all_needs_mode_all_and_an_enabled_channel(aredis: Redis) -> None:
    store = ChannelStore(aredis, make_settings())
    assert not await store.reads_all("slack", "T1", "C1")
    await store.change("slack", "T1", "C1", Field.MODE, "all")
    assert await store.reads_all("slack", "T1", "C1")
    await store.change("slack", "T1", "C1", Field.ENABLED, "0")
    assert not await store.reads_all("slack", "T1", "C1")


async def test_unreadable_stored_values_fall_back_instead_of_breaking_the_channel(
    aredis: Redis,
) -> None:
    await aredis.hset(
        keys.channel_config("slack", "T1", "C1"),
        mapping={"mode": "loud", "temperature": "hot", "max_tokens": "-3", "enabled": "maybe"},
    )
    config = await ChannelStore(aredis, make_settings()).load("slack", "T1", "C1")
    assert config == ChannelConfig()


async def test_max_tokens_are_capped_when_the_context_shrank(aredis: Redis) -> None:
    await ChannelStore(aredis, make_settings()).change(
        "slack", "T1", "C1", Field.MAX_TOKENS, "4000"
    )
    small = ChannelStore(aredis, make_settings(context_tokens=2048, max_new_tokens=256))
    policy = await small.resolve("slack", "T1", "C1", direct=False)
    assert policy.params.max_new_tokens == 1024
    assert not math.isnan(policy.params.temperature)
