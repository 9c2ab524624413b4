"""Pattern recognizers Presidio lacks or gets wrong for a helpdesk: secrets, e-mail without
the public suffix list, Spanish and international phones, admin-defined patterns.

Patterns use the `regex` package (as Presidio does): variable-length look-behind lets a
`password: …` match cover only the value.
"""

from __future__ import annotations

from collections.abc import Mapping

import regex
from presidio_analyzer import Pattern, PatternRecognizer

LANGUAGE = "en"

SECRET_PATTERNS: dict[str, str] = {
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "slack_app_token": r"\bxapp-\d-[A-Za-z0-9-]{10,}",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})",
    "aws_access_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "private_key": (
        r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]+?-----END (?:[A-Z]+ )*PRIVATE KEY-----"
    ),
    # The value after "password:", "contraseña =", "clave:"... (not the word itself).
    "password_assignment": (
        r"(?<=\b(?:password|passwd|pwd|passcode|contrase(?:ñ|n)a|clave|pin)\b"
        r"\s*(?:is|es|:|=)\s*)[\"']?[^\s\"',;]{4,}"
    ),
    "key_assignment": (
        r"(?<=\b(?:api[_ -]?key|secret|token|access[_ -]?key)\b\s*(?:is|es|:|=)\s*)"
        r"[\"']?[A-Za-z0-9_\-./+=]{16,}"
    ),
    # user:password inside a URL: https://user:pass@host
    "url_credentials": r"(?<=\b[a-z][a-z0-9+.-]*://)[^\s/:@]+:[^\s/@]+(?=@)",
}

_EMAIL = r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"

# International numbers with a + prefix, and national formats of Spain and North America.
_PHONE_PATTERNS = {
    "international": (
        r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}\b",
        0.7,
    ),
    # Spanish mobiles (6xx/7xx) and landlines (8xx/9xx): 612345678, 612 345 678, 91 123 45 67
    "es_national": (
        r"(?<![\w.+-])(?:[6789]\d{2}[ .-]?\d{3}[ .-]?\d{3}|[89]\d[ .-]?\d{3}[ .-]?\d{2}[ .-]?\d{2})"
        r"(?!\w|[.-]\d)",
        0.6,
    ),
    "nanp": (r"(?<![\w+-])\(?\b[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}\b", 0.6),
}
_PHONE_CONTEXT = [
    "phone",
    "call",
    "mobile",
    "cell",
    "tel",
    "teléfono",
    "telefono",
    "móvil",
    "movil",
    "llamar",
    "llámame",
    "whatsapp",
    "extension",
    "número",
    "numero",
]


def email_recognizer() -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity="EMAIL_ADDRESS",
        name="ParleyEmailRecognizer",
        supported_language=LANGUAGE,
        patterns=[Pattern("email", _EMAIL, 0.9)],
    )


def phone_recognizer() -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity="PHONE_NUMBER",
        name="ParleyPhoneRecognizer",
        supported_language=LANGUAGE,
        patterns=[Pattern(name, rx, score) for name, (rx, score) in _PHONE_PATTERNS.items()],
        context=_PHONE_CONTEXT,
    )


def secret_recognizer() -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity="SECRET",
        name="ParleySecretRecognizer",
        supported_language=LANGUAGE,
        patterns=[Pattern(name, rx, 0.95) for name, rx in SECRET_PATTERNS.items()],
    )


def admin_recognizers(patterns: Mapping[str, str]) -> list[PatternRecognizer]:
    """One recognizer per admin pattern (PARLEY_REDACTION_PATTERNS), its name the entity."""
    recognizers = []
    for entity, rx in patterns.items():
        try:
            regex.compile(rx)
        except regex.error as exc:
            raise ValueError(
                f"PARLEY_REDACTION_PATTERNS[{entity!r}] is not a valid regex: {exc}"
            ) from None
        recognizers.append(
            PatternRecognizer(
                supported_entity=entity,
                name=f"Admin{entity.title()}Recognizer",
                supported_language=LANGUAGE,
                patterns=[Pattern(entity.lower(), rx, 0.9)],
            )
        )
    return recognizers


_SECRETS = regex.compile("|".join(f"(?:{rx})" for rx in SECRET_PATTERNS.values()), regex.IGNORECASE)


def redact_secrets(text: str) -> str:
    """Regex-only pass for model output: no secret is ever shown in a thread."""
    return _SECRETS.sub("[redacted secret]", text)
