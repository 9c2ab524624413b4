"""AES-GCM sealing of values at rest (task payloads, memory, placeholder maps).

Every sealed value is bound to a context (the thread or message it belongs to) as associated
data, so a value copied into another key does not open.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"  # lets the format change later without guessing
_NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value did not open: wrong key, wrong context, or tampered with."""


def generate_key() -> str:
    """A new PARLEY_ENCRYPTION_KEY: 32 random bytes, base64."""
    return base64.b64encode(os.urandom(32)).decode()


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes | str, *, context: str) -> str:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, data, _VERSION + context.encode())
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode()

    def open(self, token: str, *, context: str) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except (ValueError, TypeError) as exc:
            raise SealError("not a sealed value") from exc
        version, nonce, sealed = raw[:1], raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        if version != _VERSION or len(nonce) != _NONCE_BYTES:
            raise SealError("unknown sealed format")
        try:
            return self._aead.decrypt(nonce, sealed, version + context.encode())
        except InvalidTag as exc:
            raise SealError("sealed value does not open with this key and context") from exc
