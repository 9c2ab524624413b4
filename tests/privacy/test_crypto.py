from __future__ import annotations

import base64

import pytest

from privacy.crypto import Sealer, SealError, generate_key
from tests.support.config import make_settings


def _sealer() -> Sealer:
    return Sealer(base64.b64decode(generate_key()))


def test_a_sealed_value_opens_only_in_its_context_with_its_key() -> None:
    sealer = _sealer()
    token = sealer.seal("Ana García, IBAN ES91 2100 0418 4502 0005 1332", context="thread-1")
    assert "Ana" not in token
    assert sealer.open(token, context="thread-1").decode().startswith("Ana García")
    with pytest.raises(SealError):
        sealer.open(token, context="thread-2")
    with pytest.raises(SealError):
        _sealer().open(token, context="thread-1")


def test_sealing_twice_gives_different_tokens() -> None:
    sealer = _sealer()
    assert sealer.seal("x", context="c") != sealer.seal("x", context="c")


@pytest.mark.parametrize(
    "token", ["", "not base64 at all!", base64.urlsafe_b64encode(b"\x02" * 40).decode()]
)
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(SealError):
        _sealer().open(token, context="c")


def test_tampering_is_detected() -> None:
    sealer = _sealer()
    raw = bytearray(base64.urlsafe_b64decode(sealer.seal("secret", context="c")))
    raw[-1] ^= 1
    with pytest.raises(SealError):
        sealer.open(base64.urlsafe_b64encode(bytes(raw)).decode(), context="c")


def test_generated_keys_are_32_random_bytes_that_settings_accept() -> None:
    key = generate_key()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert key != generate_key()
    assert make_settings(encryption_key=key).encryption_key_bytes == base64.b64decode(key)


def test_str_and_bytes_seal_alike_and_tokens_are_url_safe() -> None:
    sealer = _sealer()
    token = sealer.seal("naïve café", context="c")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    assert sealer.open(token, context="c") == "naïve café".encode()
    assert sealer.open(sealer.seal(b"\x00\xff", context="c"), context="c") == b"\x00\xff"


def test_a_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(b"short")
