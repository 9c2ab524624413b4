"""Names: what NER calls a person must look like one; known first names find the rest."""

from __future__ import annotations

import pytest

from privacy.names import KnownNameRecognizer, plausible_name


def _plausible(text: str, span: str) -> str | None:
    start = text.index(span)
    trimmed = plausible_name(text, start, start + len(span))
    return None if trimmed is None else text[trimmed[0] : trimmed[1]]


@pytest.mark.parametrize(
    ("text", "span", "name"),
    [
        ("Thanks, Sarah Miller", "Sarah Miller", "Sarah Miller"),
        ("Soy Gonzalo Prieto, de Ventas", "Soy Gonzalo Prieto", "Gonzalo Prieto"),
        ("Hi Priya Raman's laptop", "Priya Raman's", "Priya Raman"),
        ("to James O'Connor today", "James O'Connor", "James O'Connor"),
        ("a María de la Fuente", "María de la Fuente", "María de la Fuente"),
        ("ask Dr. Okafor", "Okafor", "Okafor"),
        ("Lo necesito para mañana", "Lo necesito", None),
        ("la impresora de la planta", "la impresora de la", None),
        ("Running Windows 11", "Running Windows", None),
        ("in Jira today", "Jira", None),
        ("the Atlas room", "Atlas", None),
        ("on macOS Sonoma", "macOS Sonoma", None),
        ("My Okta MFA", "My Okta MFA", None),
        ("de Recursos Humanos", "de Recursos Humanos", None),
        ("Formación Digital S.L. factura", "Formación Digital", None),
        ("user svc_deploy01", "svc_deploy01", None),
    ],
)
def test_ner_spans_must_look_like_names(text: str, span: str, name: str | None) -> None:
    assert _plausible(text, span) == name


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Por favor, dad acceso a Eva Gil y a Ricardo Flores.", ["Eva Gil", "Ricardo Flores"]),
        ("Os paso el NIE de Ioana Popescu mañana", ["Ioana Popescu"]),
        ("El alta de Mohamed El Amrani falla", ["Mohamed El Amrani"]),
        ("Datos: Pablo Sánchez Ortega, DNI", ["Pablo Sánchez Ortega"]),
        ("cambiad el IBAN de Aurelio Benítez hoy", ["Aurelio Benítez"]),
        ("Thanks, Priya", ["Priya"]),
        ("She moved to the San Francisco office", []),
        ("Mark the ticket as resolved", []),
        ("Trip to Austin in October", []),
        ("Nuria", ["Nuria"]),
    ],
)
def test_known_first_names_and_surnames(text: str, names: list[str]) -> None:
    results = KnownNameRecognizer().analyze(text, ["PERSON"])
    found = [text[r.start : r.end] for r in results if r.score >= 0.5]
    assert found == names
