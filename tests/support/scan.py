"""Everything stored in Redis as one text, to prove that no raw personal value is at rest."""

from __future__ import annotations

import base64
import binascii

import redis


def redis_dump(client: redis.Redis) -> str:
    """Every key and every value of every type; base64 payloads (Celery message bodies) are
    decoded too, so clear text hidden inside an envelope is found."""
    raw = redis.Redis(connection_pool=client.connection_pool)
    parts: list[str] = []
    for key in raw.scan_iter("*"):
        name = key if isinstance(key, str) else key.decode(errors="replace")
        parts.append(name)
        kind = raw.type(key)
        kind = kind if isinstance(kind, str) else kind.decode()
        values: list[object] = []
        if kind == "string":
            values = [raw.get(key)]
        elif kind == "hash":
            values = [item for pair in raw.hgetall(key).items() for item in pair]
        elif kind == "list":
            values = list(raw.lrange(key, 0, -1))
        elif kind == "set":
            values = list(raw.smembers(key))
        elif kind == "zset":
            values = list(raw.zrange(key, 0, -1))
        elif kind == "stream":
            values = [str(entry) for entry in raw.xrange(key) or []]
        for value in values:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            parts += [text, *_decoded_base64(text)]
    return "\n".join(parts)


def _decoded_base64(text: str) -> list[str]:
    found = []
    for token in text.replace('"', " ").split():
        if len(token) < 16:
            continue
        try:
            found.append(base64.b64decode(token, validate=True).decode(errors="replace"))
        except (binascii.Error, ValueError):
            continue
    return found


def message_keys(client: redis.Redis) -> list[str]:
    """Parley's keys about messages: without the keys a running worker writes whatever
    arrives (its heartbeat, the lock of its sweep for lost messages)."""
    from workers import keys

    names = (k if isinstance(k, str) else k.decode() for k in client.keys("parley:*"))
    return sorted(
        k for k in names if not k.startswith(keys.worker_heartbeat("")) and k != keys.RECOVERY_LOCK
    )
