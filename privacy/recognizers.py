"""Pattern recognizers for what Presidio lacks or gets wrong for a helpdesk: e-mail without
tldextract, Spanish national ids, Spanish and international phones, admin-defined patterns;
secrets live in privacy.secrets and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import phonenumbers
import regex

from privacy.patterns import RegexPattern, RegexRecognizer
from privacy.secrets import (
    SECRET,
    SECRET_PATTERNS,
    SECRET_REPLACEMENT,
    find_secrets,
    redact_secrets,
    secret_recognizer,
)

__all__ = [
    "SECRET",
    "SECRET_PATTERNS",
    "SECRET_REPLACEMENT",
    "PatternSettingError",
    "admin_recognizers",
    "email_recognizer",
    "es_nie_recognizer",
    "es_nif_recognizer",
    "find_secrets",
    "phone_recognizer",
    "redact_secrets",
    "secret_recognizer",
]

_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


# --- e-mail ------------------------------------------------------------------------------


def email_recognizer() -> RegexRecognizer:
    """Presidio's e-mail recognizer asks tldextract, which downloads the public suffix list
    and rejects internal domains (corp.local); a TLD of letters is proof enough here."""
    pattern = RegexPattern(
        "email",
        regex.compile(
            r"(?<![\w.%+-])[\w.%+-]*\w@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
            r"[A-Za-z]{2,24}\b(?!@)"
        ),
        0.9,
    )
    return RegexRecognizer("EMAIL_ADDRESS", [pattern], context=["email", "e-mail", "correo"])


# --- Spanish national ids ----------------------------------------------------------------


def _control_letter_ok(value: str) -> bool:
    compact = regex.sub(r"[\s.-]", "", value).upper()
    body, letter = compact[:-1], compact[-1]
    if body[:1] in ("X", "Y", "Z"):
        body = str("XYZ".index(body[0])) + body[1:]
    return body.isdigit() and _DNI_LETTERS[int(body) % 23] == letter


def es_nif_recognizer() -> RegexRecognizer:
    """DNI/NIF: 8 digits and a control letter, also written 12.345.678-Z or 12345678 Z."""
    pattern = RegexPattern(
        "nif",
        regex.compile(r"(?<![\w.-])(?:\d{8}|\d{1,2}\.\d{3}\.\d{3})[ -]?[A-Za-z](?![\w-])"),
        0.9,
        _control_letter_ok,
    )
    return RegexRecognizer("ES_NIF", [pattern], context=["dni", "nif", "identidad"])


def es_nie_recognizer() -> RegexRecognizer:
    """NIE: X, Y or Z, 7 digits and a control letter, also written X-1234567-L."""
    pattern = RegexPattern(
        "nie",
        regex.compile(r"(?<![\w.-])[XYZxyz][ -]?\d{7}[ -]?[A-Za-z](?![\w-])"),
        0.9,
        _control_letter_ok,
    )
    return RegexRecognizer("ES_NIE", [pattern], context=["nie", "extranjero"])


# --- phones ------------------------------------------------------------------------------
# Presidio's PhoneRecognizer runs libphonenumber's matcher once per region over the whole
# text (milliseconds per message). Here cheap regexes find candidates and libphonenumber
# only validates those.


def _valid_phone(region: str | None) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        number = value.replace("(", "").replace(")", "")
        if number.startswith("00"):
            number = "+" + number[2:]
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            return False
        return bool(phonenumbers.is_valid_number(parsed))

    return check


_SEP = r"[ \t.-]?"
PHONE_PATTERNS: tuple[RegexPattern, ...] = (
    # +34 612 345 678, 0034 91 123 45 67, +1 (415) 555-0132, +44 20 7946 0958
    RegexPattern(
        "international",
        regex.compile(
            rf"(?<![\w+(])(?:\+|00|\(\+)[1-9]\d{{0,2}}\)?{_SEP}(?:\(\d{{1,4}}\){_SEP})?"
            rf"\d{{1,5}}(?:{_SEP}\d{{1,5}}){{1,5}}(?![\w-])"
        ),
        0.75,
        _valid_phone(None),
    ),
    # Spanish mobiles and landlines, grouped: 612 345 678, 91 123 45 67, 622 11 22 33
    RegexPattern(
        "es grouped",
        regex.compile(
            r"(?<![\w+.,/-])(?:[6-9]\d{2}[ -]\d{3}[ -]\d{3}|[6-9]\d{2}(?:[ -]\d{2}){3}|"
            r"[89]\d[ -]\d{3}(?:[ -]\d{2}){2})(?![\w.,/-]?\d)"
        ),
        0.6,
        _valid_phone("ES"),
    ),
    # 612345678: nine bare digits are also order numbers; context words lift them.
    RegexPattern(
        "es bare",
        regex.compile(r"(?<![\w+.,/-])[6-9]\d{8}(?![\w.,/-]?\d)"),
        0.4,
        _valid_phone("ES"),
    ),
    # North American: (212) 555-0147, 415-555-0199, 617.253.1000
    RegexPattern(
        "nanp",
        regex.compile(
            r"(?<![\w+.,/-])(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"
            r"(?![\w.,/-]?\d)"
        ),
        0.6,
        _valid_phone("US"),
    ),
)
PHONE_CONTEXT = (
    "phone",
    "mobile",
    "cell",
    "call",
    "tel",
    "whatsapp",
    "teléfono",
    "telefono",
    "móvil",
    "movil",
    "llamar",
    "llámame",
    "llamadme",
    "contacto",
)


def phone_recognizer() -> RegexRecognizer:
    return RegexRecognizer("PHONE_NUMBER", PHONE_PATTERNS, context=PHONE_CONTEXT)


# --- admin-defined -----------------------------------------------------------------------

_ENTITY_NAME = regex.compile(r"[A-Z][A-Z0-9_]*")


class PatternSettingError(ValueError):
    """An admin-defined redaction pattern (PARLEY_REDACTION_PATTERNS) is unusable."""


def admin_recognizers(patterns: Mapping[str, str]) -> list[RegexRecognizer]:
    """One recognizer per PARLEY_REDACTION_PATTERNS entry; the key is the entity name."""
    recognizers = []
    for entity, source in sorted(patterns.items()):
        if not _ENTITY_NAME.fullmatch(entity):
            raise PatternSettingError(
                f"PARLEY_REDACTION_PATTERNS: entity name {entity!r} must be upper case "
                "letters, digits and underscores, e.g. EMPLOYEE_ID"
            )
        try:
            compiled = regex.compile(source)
        except regex.error as exc:
            raise PatternSettingError(
                f"PARLEY_REDACTION_PATTERNS: the pattern for {entity} is not a valid "
                f"`regex` expression: {exc}"
            ) from None
        recognizers.append(
            RegexRecognizer(entity, [RegexPattern(entity, compiled, 1.0)], name=f"Admin{entity}")
        )
    return recognizers
