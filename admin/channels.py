"""Per-channel settings: stored in Redis without TTL, validated on write, read by the
worker for every message, so a change takes effect on the next message in every process.

One Redis hash per channel, one field per setting: two admins changing different settings
at once never undo each other, and an unset field falls back to the deployment's default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from redis.asyncio import Redis

from llm.base import GenerationParams
from parley.settings import Settings
from workers import keys

Mode = Literal["mentions", "all"]
MODES: tuple[str, ...] = get_args(Mode)
PERSONA_MAX_CHARS = 4000
TEMPERATURE_RANGE = (0.0, 2.0)

# Sets a field and returns what it held before, atomically (for the audit's old -> new).
_SWAP = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return old
"""


class InvalidSetting(ValueError):
    """A value an admin typed that cannot be stored; the message says what is allowed."""


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """What admins set for one channel; None means "the deployment's default"."""

    enabled: bool | None = None
    mode: Mode = "mentions"
    persona: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    knowledge_bases: tuple[str, ...] = ()  # answers come from these documents


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """The settings one message is answered with: the channel's, else the defaults."""

    enabled: bool
    mode: Mode
    system_prompt: str
    params: GenerationParams
    customized_persona: bool
    knowledge_bases: tuple[str, ...] = ()


class Field:
    """The names admins type and the hash fields they are stored in."""

    ENABLED = "enabled"
    MODE = "mode"
    PERSONA = "persona"
    TEMPERATURE = "temperature"
    MAX_TOKENS = "max_tokens"
    KNOWLEDGE_BASES = "knowledge_bases"  # comma-separated names


def parse_temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    low, high = TEMPERATURE_RANGE
    if not low <= value <= high:  # also false for nan
        raise InvalidSetting(f"temperature must be a number from {low:g} to {high:g}, like 0.3")
    return value


def parse_max_tokens(text: str, *, context_tokens: int) -> int:
    # Half the context at most, so that the question and some history always fit.
    limit = context_tokens // 2
    if not text.isdigit() or not 1 <= int(text) <= limit:
        raise InvalidSetting(f"max-tokens must be a whole number from 1 to {limit}, like 400")
    return int(text)


def parse_mode(text: str) -> Mode:
    if text not in MODES:
        raise InvalidSetting(f"mode must be one of: {', '.join(MODES)}")
    return cast(Mode, text)


_KB_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def parse_kb_name(text: str) -> str:
    name = text.strip().lower()
    if not _KB_NAME.fullmatch(name):
        raise InvalidSetting(
            f"`{text}` is not a knowledge base name: lower-case letters, digits, - and _, "
            "like it-runbooks"
        )
    return name


def join_kbs(names: tuple[str, ...]) -> str | None:
    return ",".join(names) or None


def parse_persona(text: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidSetting("the persona is empty; write the instructions after `persona set`")
    if len(text) > PERSONA_MAX_CHARS:
        raise InvalidSetting(
            f"the persona is {len(text):,} characters long; at most {PERSONA_MAX_CHARS:,} "
            "are allowed"
        )
    return text


class ChannelStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings

    async def load(self, platform: str, tenant: str, channel: str) -> ChannelConfig:
        raw = await self._redis.hgetall(keys.channel_config(platform, tenant, channel))
        return _decode(raw)

    async def change(
        self, platform: str, tenant: str, channel: str, field: str, value: str | None
    ) -> str | None:
        """Store one setting (None: back to the default); returns the previous value.
        Values must already be validated by the parse_* functions."""
        old = await self._redis.eval(
            _SWAP, 1, keys.channel_config(platform, tenant, channel), field, value or ""
        )
        return _text(old) if old is not None else None

    async def reads_all(self, platform: str, tenant: str, channel: str) -> bool:
        """Enabled and in mode `all`: the ingress then queues every top-level message."""
        config = await self.load(platform, tenant, channel)
        return config.mode == "all" and self.enabled(config, direct=False)

    def enabled(self, config: ChannelConfig, *, direct: bool) -> bool:
        if config.enabled is not None:
            return config.enabled
        default = (
            self._settings.direct_messages if direct else self._settings.default_channel_policy
        )
        return default == "allow"

    def policy(self, config: ChannelConfig, *, direct: bool) -> ChannelPolicy:
        s = self._settings
        return ChannelPolicy(
            enabled=self.enabled(config, direct=direct),
            mode=config.mode,
            system_prompt=config.persona or s.system_prompt,
            params=GenerationParams(
                # Capped again: the context may have shrunk since the value was set.
                max_new_tokens=min(config.max_tokens, s.context_tokens // 2)
                if config.max_tokens
                else s.max_new_tokens,
                temperature=s.temperature if config.temperature is None else config.temperature,
                top_p=s.top_p,
                repetition_penalty=s.repetition_penalty,
            ),
            customized_persona=config.persona is not None,
            knowledge_bases=config.knowledge_bases,
        )

    async def resolve(
        self, platform: str, tenant: str, channel: str, *, direct: bool
    ) -> ChannelPolicy:
        return self.policy(await self.load(platform, tenant, channel), direct=direct)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: dict[str | bytes, str | bytes]) -> ChannelConfig:
    """Read leniently: a field that no longer validates (hand-edited, or from a newer
    version) falls back to the default instead of breaking the channel."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    enabled = {"1": True, "0": False}.get(fields.get(Field.ENABLED, ""))
    mode = fields.get(Field.MODE, "mentions")
    temperature: float | None = None
    max_tokens: int | None = None
    try:
        if Field.TEMPERATURE in fields:
            temperature = parse_temperature(fields[Field.TEMPERATURE])
    except InvalidSetting:
        temperature = None
    raw_tokens = fields.get(Field.MAX_TOKENS, "")
    if raw_tokens.isdigit() and int(raw_tokens) > 0:
        max_tokens = int(raw_tokens)
    kbs = tuple(
        name
        for name in fields.get(Field.KNOWLEDGE_BASES, "").split(",")
        if _KB_NAME.fullmatch(name)
    )
    return ChannelConfig(
        knowledge_bases=kbs,
        enabled=enabled,
        mode=cast(Mode, mode) if mode in MODES else "mentions",
        persona=fields.get(Field.PERSONA) or None,
        temperature=temperature,
        max_tokens=max_tokens,
    )
