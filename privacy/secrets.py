"""Secrets: tokens, keys, private key blocks, passwords and credentials in URLs.

Regex only, so `redact_secrets` is fast enough for every model answer on its way out.
Where a keyword introduces the secret ("password: …", "contraseña: …"), only the value is
the secret.
"""

from __future__ import annotations

import math
from collections import Counter

import regex

from privacy.patterns import RegexPattern, RegexRecognizer

SECRET = "SECRET"
SECRET_REPLACEMENT = "[redacted secret]"


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _random_looking(value: str) -> bool:
    """Long, mixed and high-entropy: a key, not a word or an identifier."""
    return (
        len(value) >= 16
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and _entropy(value) >= 3.0
    )


def _password_like(value: str) -> bool:
    """After a loose "is"/"es", a value must look like a password, not like a word."""
    has_digit = any(c.isdigit() for c in value)
    has_symbol = any(not c.isalnum() and c not in "-.'" for c in value)  # not "right-click"
    mixed_case = value != value.lower() and value != value.upper()
    return len(value) >= 4 and (has_digit or has_symbol or (mixed_case and len(value) >= 8))


_PASSWORD_WORDS = (
    r"(?:(?<=[_-])|\b)(?:passwords?|passwd|passphrase|passcode|pass|pwd|pin(?:[ \t]+code)?|"
    r"contrase[ñn]as?|claves?(?:[ \t]+de[ \t]+acceso)?)"
)
# Up to six words between the keyword and the value: "clave del wifi de invitados es ...".
_WORD = r"[ \t]+(?!(?:is|es|was|era|será|sería)\b)[\w.@#/-]+"
_FILLER = rf"(?:{_WORD}){{0,6}}?"
_SOME_FILLER = rf"(?:{_WORD}){{1,6}}?"
_QUOTES = "\"'\u201c\u201d\u2018\u2019"
# "//" after the colon is a URL ("…se cambia en https://id.example/reset"), not a value.
_VALUE = rf"[{_QUOTES}]?(?!//)(?P<v>[^\s{_QUOTES},;]{{3,}})"

SECRET_PATTERNS: tuple[RegexPattern, ...] = (
    RegexPattern(
        "pem private key",
        regex.compile(
            r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
            r".*?(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            regex.DOTALL,
        ),
        1.0,
    ),
    RegexPattern("slack token", regex.compile(r"\bx(?:ox[abposre]|app)-[0-9A-Za-z-]{10,}"), 1.0),
    RegexPattern(
        "slack webhook",
        regex.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+"),
        1.0,
    ),
    RegexPattern(
        "github token",
        regex.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        1.0,
    ),
    RegexPattern("gitlab token", regex.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), 1.0),
    RegexPattern(
        "aws access key id", regex.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"), 1.0
    ),
    RegexPattern("google api key", regex.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), 1.0),
    RegexPattern("stripe key", regex.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b"), 1.0),
    RegexPattern("openai key", regex.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}"), 1.0),
    RegexPattern("npm token", regex.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), 1.0),
    RegexPattern(
        "jwt", regex.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), 1.0
    ),
    # scheme://user:password@host: the user:password part. Like urllib, the credentials end
    # at the last "@" before the path.
    RegexPattern(
        "url credentials",
        regex.compile(r"\b[a-z][a-z0-9+.-]{1,20}://(?P<v>[^\s/?#@:]+:[^\s/?#]*)@[^\s/?#@]+"),
        1.0,
    ),
    RegexPattern(
        "authorization header",
        regex.compile(r"\b(?:Bearer|Basic|Token)[ \t]+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)"),
        0.9,
        _random_looking,
        trim=True,
    ),
    # password: x / password=x / contraseña: x / clave: x (any value right after ":"/"=").
    RegexPattern(
        "password assignment",
        regex.compile(rf"{_PASSWORD_WORDS}[ \t]*[:=][ \t]*{_VALUE}", regex.IGNORECASE),
        0.9,
        trim=True,
    ),
    # "Password for vpn.example.com: Xy7!abcd": words between, so password-like values only
    # ("pin the tab to the taskbar: right-click" is no secret).
    RegexPattern(
        "password assignment after words",
        regex.compile(
            rf"{_PASSWORD_WORDS}{_SOME_FILLER}[ \t]*[:=][ \t]*{_VALUE}", regex.IGNORECASE
        ),
        0.9,
        _password_like,
        trim=True,
    ),
    # "the password is Winter2024!" / "la contraseña es Madrid_2024!": password-like only.
    RegexPattern(
        "password statement",
        regex.compile(
            rf"{_PASSWORD_WORDS}{_FILLER}[ \t]+(?:is|es|was|era|será|sería)[ \t]+{_VALUE}",
            regex.IGNORECASE,
        ),
        0.9,
        _password_like,
        trim=True,
    ),
    # api_key = "…", X-Api-Key: …, AWS_SECRET_ACCESS_KEY=…: long random values only.
    RegexPattern(
        "key assignment",
        regex.compile(
            r"\b[\w-]*(?:api[_-]?key|apikey|token|secret|access[_-]?key|account[_-]?key|"
            r"private[_-]?key|client[_-]?secret)[\w-]*[\"']?[ \t]*[:=][ \t]*[\"']?"
            r"(?P<v>[A-Za-z0-9_\-./+=~]{16,})",
            regex.IGNORECASE,
        ),
        0.9,
        _random_looking,
        trim=True,
    ),
)


def find_secrets(text: str) -> list[tuple[int, int]]:
    """Sorted, merged spans of every secret in `text` (regex only: fast)."""
    spans = sorted(span for pattern in SECRET_PATTERNS for span in pattern.spans(text))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def redact_secrets(text: str, replacement: str = SECRET_REPLACEMENT) -> str:
    """Replace every secret with `replacement`; for model answers on their way out."""
    parts, last = [], 0
    for start, end in find_secrets(text):
        parts += [text[last:start], replacement]
        last = end
    return "".join([*parts, text[last:]])


def secret_recognizer() -> RegexRecognizer:
    return RegexRecognizer(SECRET, SECRET_PATTERNS, name="SecretRecognizer")
