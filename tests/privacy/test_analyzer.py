"""The analyzer: one per process, only NER running, no noisy entity types, overlaps
resolved, analysis off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from privacy.analyzer import (
    ENTITIES,
    Finding,
    ModelNotInstalledError,
    PersonalDataAnalyzer,
    build_analyzer,
    get_analyzer,
)
from privacy.recognizers import SECRET


def _found(analyzer: PersonalDataAnalyzer, text: str) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in analyzer.find(text)]


def test_one_analyzer_per_configuration() -> None:
    patterns = {"EMPLOYEE_ID": r"\bEMP-\d{6}\b"}
    assert get_analyzer(patterns=patterns) is get_analyzer(patterns=dict(patterns))
    assert get_analyzer(patterns=patterns) is not get_analyzer(patterns={})


def test_only_ner_runs_in_spacy(analyzer: PersonalDataAnalyzer) -> None:
    nlp = analyzer.engine.nlp_engine.get_nlp("en")  # type: ignore[attr-defined]
    assert nlp.pipe_names == ["ner"]


def test_entities_are_parleys_list_plus_admin_patterns(analyzer: PersonalDataAnalyzer) -> None:
    assert analyzer.entities == (*ENTITIES, "EMPLOYEE_ID")
    supported = set(analyzer.engine.get_supported_entities("en"))
    assert {"DATE_TIME", "LOCATION", "NRP", "URL", "ORGANIZATION"}.isdisjoint(supported)


def test_a_missing_spacy_model_is_a_clear_error_not_a_download() -> None:
    with pytest.raises(ModelNotInstalledError, match="PARLEY_SPACY_MODEL"):
        build_analyzer("xx_no_such_model_sm")


@pytest.mark.parametrize(
    "text",
    [
        "Ticket INC0012345 was reopened after the update to v2.3.1 on 2024-03-15.",
        "Build 22631.3296 of Windows 11 23H2; macOS Sonoma 14.4.1; Python 3.12.",
        "Error 0x80070005 on vpn.example.com port 8443, HTTP 503 from reports.example.com.",
        "Room 4.12, floor 3, sala B-204; asset LAPTOP-7F3K2, PO-4500123456, KB5034441.",
        "The total was $1,299.99 (1.250,00 €) for 3 nights, booking ref HX-88213.",
        "Firmware version 10.2.0.1 and release 4.18.2 of the scheduler.",
        "Jira, Confluence, Grafana and Jenkins are down since 06:30 UTC on Friday.",
        "Necesito que reviséis la impresora de la segunda planta, da el error SC542.",
        "La factura es de Formación Digital S.L., contrato 2024-017, el 31/03/2024.",
    ],
)
def test_distractors_are_not_personal_data(analyzer: PersonalDataAnalyzer, text: str) -> None:
    assert _found(analyzer, text) == []


def test_a_helpdesk_message_in_english(analyzer: PersonalDataAnalyzer) -> None:
    text = (
        "Hi, I'm Sarah Miller (sarah.miller@contoso.com, +1 (415) 555-0132). My password: "
        "Hunter2pass! Card 4111 1111 1111 1111, SSN 536-22-1847, server 10.20.30.40 and "
        "2001:db8::1. Badge EMP-204518. Ticket INC0012345, v2.3.1."
    )
    assert _found(analyzer, text) == [
        ("PERSON", "Sarah Miller"),
        ("EMAIL_ADDRESS", "sarah.miller@contoso.com"),
        ("PHONE_NUMBER", "+1 (415) 555-0132"),
        (SECRET, "Hunter2pass!"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),
        ("US_SSN", "536-22-1847"),
        ("IP_ADDRESS", "10.20.30.40"),
        ("IP_ADDRESS", "2001:db8::1"),
        ("EMPLOYEE_ID", "EMP-204518"),
    ]


def test_a_helpdesk_message_in_spanish(analyzer: PersonalDataAnalyzer) -> None:
    text = (
        "Buenos días, soy Lucía Fernández. Mi DNI es 12.345.678-Z, el NIE de mi marido "
        "X1234567L, mi móvil 612 345 678 y el IBAN ES91 2100 0418 4502 0005 1332. "
        "La contraseña: Verano2024$ no funciona desde la versión 6.1.3."
    )
    assert _found(analyzer, text) == [
        ("PERSON", "Lucía Fernández"),
        ("ES_NIF", "12.345.678-Z"),
        ("ES_NIE", "X1234567L"),
        ("PHONE_NUMBER", "612 345 678"),
        ("IBAN_CODE", "ES91 2100 0418 4502 0005 1332"),
        (SECRET, "Verano2024$"),
    ]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Hola, soy Rosa. No me funciona el correo.", ["Rosa"]),
        ("La sala Rosa no tiene proyector.", []),
        ("Thanks, Mark", ["Mark"]),
        ("Mark the ticket as resolved, please.", []),
    ],
)
def test_ambiguous_first_names_need_a_context_word(
    analyzer: PersonalDataAnalyzer, text: str, names: list[str]
) -> None:
    assert [v for e, v in _found(analyzer, text) if e == "PERSON"] == names


def test_overlaps_keep_the_more_specific_finding(analyzer: PersonalDataAnalyzer) -> None:
    # The URL's credentials look like an e-mail address too ("Zx8$kLm2Pq@git...").
    text = "git clone https://deploy:Zx8$kLm2Pq@git.example.com/infra.git fails"
    assert _found(analyzer, text) == [(SECRET, "deploy:Zx8$kLm2Pq")]


async def test_afind_runs_off_the_event_loop(analyzer: PersonalDataAnalyzer) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = analyzer.find

    def spy(text: str) -> list[Finding]:
        seen.append(threading.get_ident())
        return original(text)

    analyzer.find = spy  # type: ignore[method-assign]
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        texts = ["Hi, I'm Sarah Miller from Finance, call me on +34 612 345 678."] * 20
        results = await asyncio.gather(*(analyzer.afind(t) for t in texts))
        task.cancel()
    finally:
        del analyzer.find
    assert all(r == results[0] for r in results)
    assert seen
    assert loop_thread not in seen
    assert ticks > 20, "the event loop kept running while the analysis ran"
