"""Per-thread placeholder map: the same value is the same placeholder in every turn.

One Redis hash per thread holds, for each value met:
- `v:<hmac>` -> placeholder, where the HMAC (keyed, thread-bound) finds a value again
  without the value being stored in clear;
- `p:<placeholder>` -> the value, who wrote it and its HMAC, sealed with AES-GCM;
- `n:<ENTITY>` -> the last number given to that entity type.
A Lua script assigns placeholders atomically, so two workers redacting in one thread never
hand the same placeholder to two values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from privacy.crypto import Sealer

_ASSIGN = """
local existing = redis.call('hget', KEYS[1], 'v:' .. ARGV[1])
if existing then
  redis.call('expire', KEYS[1], ARGV[4])
  return existing
end
local n = redis.call('hincrby', KEYS[1], 'n:' .. ARGV[2], 1)
local placeholder = '<' .. ARGV[2] .. '_' .. n .. '>'
redis.call('hset', KEYS[1], 'v:' .. ARGV[1], placeholder, 'p:' .. placeholder, ARGV[3])
redis.call('expire', KEYS[1], ARGV[4])
return placeholder
"""


@dataclass(frozen=True, slots=True)
class VaultEntry:
    placeholder: str
    entity: str
    value: str
    user: str
    digest: str


def vault_key(thread_key: str) -> str:
    return f"parley:pii:{thread_key}"


class PlaceholderVault:
    def __init__(self, redis: Redis, sealer: Sealer, lookup_key: bytes, *, ttl: int) -> None:
        self._redis = redis
        self._sealer = sealer
        self._lookup_key = lookup_key
        self._ttl = ttl

    async def placeholder(self, thread_key: str, entity: str, value: str, user: str) -> str:
        digest = self._digest(thread_key, entity, value)
        # Sealed before the script runs; it is stored only if the value is new.
        sealed = self._sealer.seal(
            json.dumps({"entity": entity, "value": value, "user": user, "digest": digest}),
            context=thread_key,
        )
        placeholder = await self._redis.eval(
            _ASSIGN, 1, vault_key(thread_key), digest, entity, sealed, self._ttl
        )
        return str(placeholder.decode() if isinstance(placeholder, bytes) else placeholder)

    async def entries(self, thread_key: str) -> list[VaultEntry]:
        raw = cast(dict[str, str], await self._redis.hgetall(vault_key(thread_key)))
        entries = []
        for field, sealed in raw.items():
            if field.startswith("p:"):
                data = json.loads(self._sealer.open(sealed, context=thread_key))
                entries.append(VaultEntry(placeholder=field[2:], **data))
        return entries

    async def forget_thread(self, thread_key: str) -> None:
        await self._redis.delete(vault_key(thread_key))

    async def forget_user(self, thread_key: str, user: str) -> int:
        theirs = [e for e in await self.entries(thread_key) if e.user == user]
        await self._drop(thread_key, theirs)
        return len(theirs)

    async def _drop(self, thread_key: str, entries: Iterable[VaultEntry]) -> None:
        fields = [f for e in entries for f in (f"p:{e.placeholder}", f"v:{e.digest}")]
        if fields:
            await self._redis.hdel(vault_key(thread_key), *fields)

    def _digest(self, thread_key: str, entity: str, value: str) -> str:
        message = "\0".join((thread_key, entity, value)).encode()
        return hmac.new(self._lookup_key, message, hashlib.sha256).hexdigest()


def lookup_key(encryption_key: bytes) -> bytes:
    """A separate key for the HMAC lookups, derived from the encryption key."""
    return hmac.new(encryption_key, b"parley placeholder lookup v1", hashlib.sha256).digest()
