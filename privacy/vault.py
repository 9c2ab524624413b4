"""Per-thread placeholder map: the same value is the same placeholder in every turn.

One Redis hash per thread, `parley:pii:<thread_key>`, with the thread's TTL (refreshed on
use), holds:
- `v:<hmac>` -> placeholder: finds a value again without storing it; the HMAC is keyed
  (a key derived from PARLEY_ENCRYPTION_KEY) and bound to the thread and entity type;
- `p:<placeholder>` -> the entity type and value, sealed with AES-GCM for this thread;
- `u:<placeholder>:<user tag>` -> who wrote the value (a keyed, thread-bound tag, not the
  user id), so that one person's values can be forgotten;
- `n:<ENTITY>` -> the last number given to that type. It survives erasure, so a forgotten
  <PERSON_1> is never reused for someone else while old turns still mention it.
Lua scripts assign and forget atomically: two workers redacting in one thread never give
two values one placeholder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from privacy.crypto import Sealer, SealError

PREFIX = "parley:pii:"

# KEYS[1] the hash; ARGV: ttl, user tag, then (digest, entity, sealed value) per value.
_ASSIGN = """
local placeholders = {}
for i = 3, #ARGV, 3 do
  local digest, entity, sealed = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local placeholder = redis.call('HGET', KEYS[1], 'v:' .. digest)
  if not placeholder then
    local n = redis.call('HINCRBY', KEYS[1], 'n:' .. entity, 1)
    placeholder = '<' .. entity .. '_' .. n .. '>'
    redis.call('HSET', KEYS[1], 'v:' .. digest, placeholder, 'p:' .. placeholder, sealed)
  end
  redis.call('HSET', KEYS[1], 'u:' .. placeholder .. ':' .. ARGV[2], '1')
  placeholders[#placeholders + 1] = placeholder
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return placeholders
"""

# KEYS[1] the hash; ARGV[1] the user tag. Drops every value that user wrote.
_FORGET_USER = """
local fields = redis.call('HGETALL', KEYS[1])
local suffix = ':' .. ARGV[1]
local theirs = {}
for i = 1, #fields, 2 do
  local f = fields[i]
  if string.sub(f, 1, 2) == 'u:' and string.sub(f, -#suffix) == suffix then
    theirs[string.sub(f, 3, #f - #suffix)] = true
  end
end
local dropped = 0
for i = 1, #fields, 2 do
  local f, v = fields[i], fields[i + 1]
  local kind = string.sub(f, 1, 2)
  local placeholder = nil
  if kind == 'v:' then
    placeholder = v
  elseif kind == 'p:' then
    placeholder = string.sub(f, 3)
  elseif kind == 'u:' then
    placeholder = string.match(string.sub(f, 3), '^(<.->):')
  end
  if placeholder and theirs[placeholder] then
    redis.call('HDEL', KEYS[1], f)
    if kind == 'p:' then dropped = dropped + 1 end
  end
end
return dropped
"""


@dataclass(frozen=True, slots=True)
class VaultEntry:
    placeholder: str
    entity: str
    value: str


def vault_key(thread_key: str) -> str:
    return PREFIX + thread_key


def lookup_key(encryption_key: bytes) -> bytes:
    """A separate key for the HMAC lookups, derived from the encryption key."""
    return hmac.new(encryption_key, b"parley placeholder lookup v1", hashlib.sha256).digest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PlaceholderVault:
    def __init__(self, redis: Redis, encryption_key: bytes, *, ttl: int) -> None:
        self._redis = redis
        self._sealer = Sealer(encryption_key)
        self._lookup_key = lookup_key(encryption_key)
        self._ttl = ttl

    async def placeholders(
        self, thread_key: str, values: Sequence[tuple[str, str]], *, user: str
    ) -> list[str]:
        """One placeholder per (entity, value), in order; new values get the next number.
        One round trip for the whole message."""
        if not values:
            return []
        args: list[str | int] = [self._ttl, self._tag(thread_key, "user", user)]
        for entity, value in values:
            # Sealed before the script runs; stored only if the value is new.
            sealed = self._sealer.seal(
                json.dumps({"entity": entity, "value": value}), context=thread_key
            )
            args += [self._tag(thread_key, entity, value), entity, sealed]
        result = await self._redis.eval(_ASSIGN, 1, vault_key(thread_key), *args)
        return [_text(p) for p in result]

    async def lookup(self, thread_key: str, placeholders: Iterable[str]) -> dict[str, VaultEntry]:
        """The entries behind these placeholders; unknown ones are left out."""
        wanted = sorted(set(placeholders))
        if not wanted:
            return {}
        key = vault_key(thread_key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(key, [f"p:{p}" for p in wanted])
            pipe.expire(key, self._ttl)
            sealed, _ = await pipe.execute()
        return {
            p: entry
            for p, s in zip(wanted, sealed, strict=True)
            if s is not None and (entry := self._open(thread_key, p, s)) is not None
        }

    async def entries(self, thread_key: str) -> list[VaultEntry]:
        key = vault_key(thread_key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.expire(key, self._ttl)
            raw, _ = await pipe.execute()
        entries = []
        for field, sealed in raw.items():
            name = _text(field)
            if name.startswith("p:"):
                entry = self._open(thread_key, name[2:], sealed)
                if entry is not None:
                    entries.append(entry)
        return entries

    async def forget_thread(self, thread_key: str) -> None:
        await self._redis.delete(vault_key(thread_key))

    async def forget_user(self, thread_key: str, user: str) -> int:
        """Drops every value this user wrote in the thread; returns how many."""
        tag = self._tag(thread_key, "user", user)
        dropped = await self._redis.eval(_FORGET_USER, 1, vault_key(thread_key), tag)
        return int(dropped)

    def _open(self, thread_key: str, placeholder: str, sealed: bytes | str) -> VaultEntry | None:
        try:
            data = json.loads(self._sealer.open(_text(sealed), context=thread_key))
        except SealError:
            return None  # another key (rotated) or tampered: as good as forgotten
        return VaultEntry(placeholder, str(data["entity"]), str(data["value"]))

    def _tag(self, thread_key: str, kind: str, value: str) -> str:
        message = "\0".join((thread_key, kind, value)).encode()
        return hmac.new(self._lookup_key, message, hashlib.sha256).hexdigest()
