"""Settings for in-process tests, with the test encryption key."""

from __future__ import annotations

from typing import Any

from parley.settings import Settings
from privacy.crypto import Sealer

# PARLEY_ENCRYPTION_KEY for tests: 32 fixed bytes, base64.
ENCRYPTION_KEY = "cGFybGV5LXRlc3Qta2V5LTMyLWJ5dGVzLWxvbmchISE="


def make_settings(**values: Any) -> Settings:
    return Settings(**{"encryption_key": ENCRYPTION_KEY, **values})


def make_sealer() -> Sealer:
    return Sealer(make_settings().require_encryption_key())
