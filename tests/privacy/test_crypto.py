from __future__ import annotations

import base64

import pytest

from privacy.crypto import Sealer, SealError, generate_key


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
