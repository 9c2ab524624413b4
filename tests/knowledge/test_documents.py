"""Reading each file type, and refusing bad files with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.documents import UnreadableFile, parse_document, read_document
from tests.knowledge.pdf import make_pdf

HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Training budget</title>
<style>p { color: red }</style><script>var secret = "not text";</script></head>
<body><nav>Home</nav>
<h1>Training &amp; courses</h1><p>Each employee has <b>1,200 EUR</b> a year.</p>
<h2>How to apply</h2><ul><li>Ask your manager.</li><li>Book in the portal.</li></ul>
<h2>Exceptions</h2><p>Masters&#8217; degrees need HR approval.</p>
</body></html>"""


def test_html_headings_text_and_no_scripts() -> None:
    document = parse_document(HTML.encode(), "html", fallback_title="training")
    assert document.title == "Training budget"  # <title> first
    paths = [s.path for s in document.sections]
    # The <h1> is not the declared title, so it heads the sections' paths.
    top = "Training & courses"
    assert paths == [(top,), (top, "How to apply"), (top, "Exceptions")]
    whole = "\n".join(s.text for s in document.sections)
    assert "secret" not in whole
    assert "color" not in whole
    assert "Each employee has 1,200 EUR a year." in whole
    assert "- Ask your manager." in whole
    assert "- Book in the portal." in whole
    assert "Masters\u2019 degrees" in whole


def test_an_html_heading_repeating_the_title_leaves_the_paths() -> None:
    page = b"<title>VPN</title><h1>VPN</h1><p>Intro</p><h2>Client</h2><p>Install it.</p>"
    document = parse_document(page, "html", fallback_title="x")
    assert [s.path for s in document.sections] == [(), ("Client",)]


def test_html_without_a_closing_head_keeps_its_body() -> None:
    page = b"<html><head><title>VPN guide</title><meta charset=utf-8><body><h1>VPN</h1><p>text"
    document = parse_document(page, "html", fallback_title="x")
    assert document.title == "VPN guide"
    assert [(s.path, s.text) for s in document.sections] == [(("VPN",), "text")]


def test_an_unclosed_head_ends_at_body_content_and_still_hides_code() -> None:
    page = (
        b"<head><title>Printers</title><style>p { color: red }</style>"
        b"<script>var secret = 1;</script>\n  Add the printer from Settings."
        b"<p>Pick PRN-4.<script>var hidden = 2;</script> Then print a test page.</p>"
    )
    document = parse_document(page, "html", fallback_title="x")
    assert document.title == "Printers"
    whole = "\n".join(s.text for s in document.sections)
    assert "Add the printer from Settings." in whole  # text alone starts the body too
    assert "Pick PRN-4. Then print a test page." in whole
    assert "color" not in whole
    assert "var " not in whole


def test_html_in_a_declared_legacy_encoding() -> None:
    page = '<meta charset="iso-8859-1"><h1>Política</h1><p>Días libres</p>'.encode("latin-1")
    document = parse_document(page, "html", fallback_title="x")
    assert document.title == "Política"
    assert document.sections[0].text == "Días libres"


def test_pdf_pages_become_sections_and_its_title_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "travel.pdf"
    path.write_bytes(
        make_pdf(
            [["Meals are paid up to 60 euros per day.", "Taxis need a receipt."],
             ["Los viajes en tren se reservan en la agencia."]],
            title="Travel rules",
        )
    )  # fmt: skip
    document = read_document(path)
    assert document.title == "Travel rules"
    assert [s.path for s in document.sections] == [("Page 1",), ("Page 2",)]
    assert "60 euros" in document.sections[0].text
    assert "agencia" in document.sections[1].text


def test_pdf_without_a_title_is_named_by_its_file(tmp_path: Path) -> None:
    path = tmp_path / "vpn-guide.pdf"
    path.write_bytes(make_pdf([["Open GlobalProtect."]]))
    assert read_document(path).title == "vpn-guide"


def test_plain_text_keeps_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "lost-devices.txt"
    path.write_text("Report it within 24 hours.\nCall security.\n", encoding="utf-8")
    document = read_document(path)
    assert document.title == "lost-devices"
    assert document.sections[0].text == "Report it within 24 hours.\nCall security."


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.md", b"", "empty"),
        ("blank.txt", b"  \n\n ", "empty"),
        ("latin1.md", "# Política\nDías".encode("latin-1"), "not valid UTF-8"),
        ("binary.txt", b"\x00\x01\x02abc", "binary"),
        ("broken.pdf", b"%PDF-1.4\nthis is not a PDF", "unreadable PDF"),
        ("scan.pdf", make_pdf([[]]), "no text"),
        ("headings-only.md", b"# Title\n## Section\n", "no text"),
        ("slides.pptx", b"PK\x03\x04", "unsupported file type"),
    ],
)
def test_bad_files_are_refused_with_a_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFile, match=reason):
        read_document(path)
