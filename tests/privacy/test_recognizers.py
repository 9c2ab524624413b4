"""Pattern recognizers: every kind of secret (only the value, never the keyword), Spanish ids
with their control letters, phones, admin patterns, and the distractors they must leave."""

from __future__ import annotations

import pytest

from privacy.analyzer import PersonalDataAnalyzer
from privacy.recognizers import (
    SECRET_REPLACEMENT,
    PatternSettingError,
    admin_recognizers,
    es_nie_recognizer,
    es_nif_recognizer,
    find_secrets,
    phone_recognizer,
    redact_secrets,
)

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx7pT8yq3k9d2H0mLZ4r1XQz8b8eYfK2M1wVvX9Q7\n"
    "c5Tq2e9YvWnP3sL8kD4fG7hJ1mN0oQ2rS5tU8vW9xY0zA1bC2dE3fG4h\n-----END RSA PRIVATE KEY-----"
)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NSIsImlhdCI6MTcxNjIzOTAyMn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def secrets_in(text: str) -> list[str]:
    return [text[start:end] for start, end in find_secrets(text)]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "bot token xoxb-787789328792-1742180967929-a1Hedcm4pMbXDuCL1mHoOsFa leaked",
            "xoxb-787789328792-1742180967929-a1Hedcm4pMbXDuCL1mHoOsFa",
        ),
        (
            "user token xoxp-1746814538-19161461-0d347301ef56 ok",
            "xoxp-1746814538-19161461-0d347301ef56",
        ),
        (
            "app token xapp-1-A49ERNNBER0-7300245892152-ea410fb9",
            "xapp-1-A49ERNNBER0-7300245892152-ea410fb9",
        ),
        (
            "use ghp_F5puzQqmOBZZW6m4nyoL6uniiFw152cTe8r0 now",
            "ghp_F5puzQqmOBZZW6m4nyoL6uniiFw152cTe8r0",
        ),
        (
            "oauth gho_khCEr7n1AyOHFRuT11NCue1cr3McRTrKwtPY",
            "gho_khCEr7n1AyOHFRuT11NCue1cr3McRTrKwtPY",
        ),
        (
            "app ghs_KbPizDmbX1rpXjYdOhCgOIPOZx9eRmm0EqlT.",
            "ghs_KbPizDmbX1rpXjYdOhCgOIPOZx9eRmm0EqlT",
        ),
        (
            "pat github_pat_11AY96V3UNGHNPYFT8UQBW_GfcCvJAXrF6bnZ3eBZclIvRY6iEjH5UH1RSC8 here",
            "github_pat_11AY96V3UNGHNPYFT8UQBW_GfcCvJAXrF6bnZ3eBZclIvRY6iEjH5UH1RSC8",
        ),
        ("key AKIAQTYNTJR7M2HAYBCZ in a gist", "AKIAQTYNTJR7M2HAYBCZ"),
        ("temporary ASIAH7FKE52ZRP67IV36,", "ASIAH7FKE52ZRP67IV36"),
        (f"Authorization: Bearer {JWT}", JWT),
        (f"el token de acceso: {JWT}.", JWT),
        (f"the vendor key:\n{PEM}\nthanks", PEM),
        ("password: hunter2xyz", "hunter2xyz"),
        ("password=hunter2xyz rejected", "hunter2xyz"),
        ("user: admin / pass: 1234abcd", "1234abcd"),
        ("Kiosk PIN: 4821 doesn't open", "4821"),
        ("pwd: Tr0ub4dor&3 is what it says", "Tr0ub4dor&3"),
        ("La contraseña: Verano2024$ no funciona", "Verano2024$"),
        ("en texto plano clave: Kx9#mP2!vQ en el repo", "Kx9#mP2!vQ"),
        ("DB_PASSWORD=Gx7!pLq2#Vb9 in the log", "Gx7!pLq2#Vb9"),
        ("Password for the VPN: Xy7abc!d.", "Xy7abc!d"),
        ("the password is Winter2024! but", "Winter2024!"),
        ("La clave de acceso del wifi de invitados es Invitados#2024 según", "Invitados#2024"),
        (
            "postgres://app_user:Sup3rS3cret!@db-staging.internal:5432/orders",
            "app_user:Sup3rS3cret!",
        ),
        ("https://deploy:p@ss:w0rd@git.example.com/repo.git", "deploy:p@ss:w0rd"),
        ('api_key = "67611088d013782257bffb6aaf423e6e"', "67611088d013782257bffb6aaf423e6e"),
        (
            "AWS_SECRET_ACCESS_KEY=ZgzWbmHGJR1m4jfXuX8v+h2+1KZNUK9IKLdbFfu0",
            "ZgzWbmHGJR1m4jfXuX8v+h2+1KZNUK9IKLdbFfu0",
        ),
        ("stripe sk_live_WRyd5uVzdLU8ueZ5oBUEqWpc", "sk_live_WRyd5uVzdLU8ueZ5oBUEqWpc"),
        ("glpat-Xy12Ab34Cd56Ef78Gh90 leaked", "glpat-Xy12Ab34Cd56Ef78Gh90"),
        (
            "hook https://hooks.slack.com/services/T0ABC1234/B0DEF5678/q1w2e3r4t5y6u7i8o9p0",
            "https://hooks.slack.com/services/T0ABC1234/B0DEF5678/q1w2e3r4t5y6u7i8o9p0",
        ),
    ],
)
def test_each_kind_of_secret_is_found_value_only(text: str, secret: str) -> None:
    assert secrets_in(text) == [secret]


def test_a_private_key_cut_off_is_redacted_to_the_end() -> None:
    text = "here:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"
    assert secrets_in(text) == [text[text.index("-----") :]]


@pytest.mark.parametrize(
    "text",
    [
        "Password reset request for my account, ticket INC0012345",
        "The office Wi-Fi password changed and nobody told reception",
        "the password is incorrect according to Outlook",
        "la contraseña es incorrecta desde ayer",
        "Me pide la contraseña de la wifi corporativa cada vez que enciendo el portátil.",
        "La clave del proyecto es colaborar",
        "token=aaaaaaaaaaaaaaaaaaaaaaaa and api_key = 'your-api-key-here'",
        "I can't pass the login screen: error 403",
        "Pin the tab to the taskbar: right-click it",
        "La clave para entrar al portal: usar el SSO",
        "Bearer authentication is configured in the gateway",
        "release v2.3.1 on 2024-03-15 fixed error 0x80070005 on vpn.example.com",
        "see https://intranet.example.com/wiki/page?id=55123 and ssh admin@10.0.0.1",
        "la contraseña se cambia en https://id.acme.example/reset",
    ],
)
def test_no_secret_in_ordinary_text(text: str) -> None:
    assert secrets_in(text) == []


def test_redact_secrets_replaces_only_the_secret() -> None:
    text = "Use password: hunter2xyz and token xoxb-123456789012-abcdefghijkl, then v2.3.1."
    assert redact_secrets(text) == (
        f"Use password: {SECRET_REPLACEMENT} and token {SECRET_REPLACEMENT}, then v2.3.1."
    )


def test_redact_secrets_leaves_normal_text_identical() -> None:
    text = "To reset the VPN:\n\n1. Open **Settings**\n2. Click `Reconnect`\n\nThanks, <@U1>!"
    assert redact_secrets(text) == text


def _found(recognizer_entity: str, text: str) -> list[str]:
    recognizer = {
        "ES_NIF": es_nif_recognizer(),
        "ES_NIE": es_nie_recognizer(),
        "PHONE_NUMBER": phone_recognizer(),
    }[recognizer_entity]
    return [text[r.start : r.end] for r in recognizer.analyze(text, [recognizer_entity])]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("DNI 12345678Z", ["12345678Z"]),
        ("DNI 12345678z", ["12345678z"]),
        ("DNI 12.345.678-Z.", ["12.345.678-Z"]),
        ("NIF 53464097-E", ["53464097-E"]),
        ("DNI 12345678A (wrong letter)", []),
        ("pedido 12345678 sin letra", []),
        ("serie ABC12345678Z", []),
    ],
)
def test_spanish_nif_needs_its_control_letter(text: str, found: list[str]) -> None:
    assert _found("ES_NIF", text) == found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("NIE X1234567L", ["X1234567L"]),
        ("NIE X-8122250-F", ["X-8122250-F"]),
        ("NIE Y8275367G y Z8015764Q", ["Y8275367G", "Z8015764Q"]),
        ("NIE X1234567A (wrong letter)", []),
        ("NIE W1234567L", []),
    ],
)
def test_spanish_nie_needs_its_control_letter(text: str, found: list[str]) -> None:
    assert _found("ES_NIE", text) == found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("móvil +34 612 345 678", ["+34 612 345 678"]),
        ("tel 0034 612 34 56 78", ["0034 612 34 56 78"]),
        ("llamad al (+34) 699 12 34 56", ["(+34) 699 12 34 56"]),
        ("fijo 91 123 45 67", ["91 123 45 67"]),
        ("fijo 934 567 890", ["934 567 890"]),
        ("móvil 612345678", ["612345678"]),
        ("call (212) 555-0147 or 415-555-0199", ["(212) 555-0147", "415-555-0199"]),
        ("UK +44 20 7946 0958", ["+44 20 7946 0958"]),
        ("US +1 (415) 555-0132", ["+1 (415) 555-0132"]),
        ("build 22631.3296, PO-4500123456, 1.250,00 €, 2024-03-15, 10.20.30.40", []),
        ("invalid +34 412 345 678", []),
    ],
)
def test_phones_international_and_spanish(text: str, found: list[str]) -> None:
    assert sorted(_found("PHONE_NUMBER", text)) == sorted(found)


def test_a_bare_nine_digit_number_needs_a_phone_word(analyzer: PersonalDataAnalyzer) -> None:
    with_context = "Mi móvil es 612345678, llamadme por la tarde."
    without = "El pedido 612345678 llegó ayer."
    assert [f.entity for f in analyzer.find(with_context)] == ["PHONE_NUMBER"]
    assert analyzer.find(without) == []


def test_admin_patterns_name_their_entity() -> None:
    (recognizer,) = admin_recognizers({"EMPLOYEE_ID": r"\bEMP-\d{6}\b"})
    results = recognizer.analyze("badge for EMP-204518 and EMP-12", ["EMPLOYEE_ID"])
    assert [(r.entity_type, r.start, r.end) for r in results] == [("EMPLOYEE_ID", 10, 20)]


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ({"employee id": r"EMP-\d+"}, "entity name 'employee id'"),
        ({"EMPLOYEE_ID": r"EMP-(\d+"}, "not a valid `regex` expression"),
    ],
)
def test_bad_admin_patterns_are_refused_clearly(patterns: dict[str, str], message: str) -> None:
    with pytest.raises(PatternSettingError, match="PARLEY_REDACTION_PATTERNS") as error:
        admin_recognizers(patterns)
    assert message in str(error.value)
