"""Reading Markdown, plain text, HTML and PDF files into titled sections.

A document is its title and a list of sections, each with its heading path and its text.
The title is the first heading (HTML: <title> first), else the file name without its suffix;
when that heading is the only one of the outermost level it is left out of the sections'
heading paths, which then start below it ("Vacation > Carry-over").
Files that cannot be read raise UnreadableFile with a reason for the ingest report.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}

# A larger file is not a document we should embed whole; it is probably misplaced.
MAX_FILE_BYTES = 50 * 1024 * 1024


class UnreadableFile(Exception):
    """The file is skipped; str(exc) is the reason shown to the operator."""


@dataclass(frozen=True, slots=True)
class Section:
    path: tuple[str, ...]  # headings above the text, outermost first
    text: str


@dataclass(slots=True)
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def check_size(size: int) -> None:
    """Raise UnreadableFile for a file of `size` bytes over MAX_FILE_BYTES."""
    if size > MAX_FILE_BYTES:
        raise UnreadableFile(
            f"too large ({size / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB)"
        )


def read_document(path: Path) -> Document:
    """Parse one file by its suffix; raise UnreadableFile for empty, binary, badly encoded or
    broken files."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnreadableFile(f"unsupported file type {path.suffix or '(none)'}")
    try:
        check_size(path.stat().st_size)
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot be read ({exc.strerror or exc})") from None
    return parse_document(data, kind, fallback_title=path.stem)


def parse_document(data: bytes, kind: str, *, fallback_title: str) -> Document:
    if not data.strip():
        raise UnreadableFile("empty")
    if kind == "pdf":
        document = _parse_pdf(data, fallback_title)
    else:
        text = _decode(data, html=kind == "html")
        if kind == "markdown":
            document = _parse_markdown(text, fallback_title)
        elif kind == "html":
            document = _parse_html(text, fallback_title)
        else:
            document = Document(fallback_title, [Section((), text.strip("\n"))])
    document.sections = [s for s in document.sections if s.text.strip()]
    if not document.sections:
        raise UnreadableFile("no text in it")
    return document


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def _decode(data: bytes, *, html: bool) -> str:
    encoding = "utf-8-sig"
    if html:
        declared = _META_CHARSET.search(data[:4096])
        if declared:
            encoding = declared.group(1).decode("ascii").lower()
            if encoding in ("utf-8", "utf8"):
                encoding = "utf-8-sig"
    if b"\x00" in data[:8192] and not encoding.startswith("utf-16"):
        raise UnreadableFile("binary data, not text")
    try:
        text = data.decode(encoding)
    except LookupError:
        raise UnreadableFile(f"unknown character encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"not valid {encoding.removesuffix('-sig').upper()} text (byte {exc.start}); "
            "save it as UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _with_title(
    headed: list[tuple[tuple[tuple[int, str], ...], str]],
    fallback: str,
    declared: str = "",
) -> Document:
    """Sections from (heading stack as (level, text) pairs, body) in document order.
    `declared`: a title the file states apart from its headings (HTML's <title>)."""
    outer = [stack[0] for stack, _ in headed if stack]
    if not outer:
        sections = [Section((), body.strip("\n")) for _, body in headed]
        return Document(declared or fallback, sections)
    first = outer[0]
    top = min(level for level, _ in outer)
    # A lone heading of the outermost level names the document: it leaves the paths.
    drop_first = first[0] == top and len({h for h in outer if h[0] == top}) == 1
    if declared and first[1].casefold() != declared.casefold():
        drop_first = False  # the heading is not the title the file declares
    sections = []
    for stack, body in headed:
        names = [text for _, text in stack]
        if drop_first and stack:
            names = names[1:]
        sections.append(Section(tuple(names), body.strip("\n")))
    return Document(declared or first[1] or fallback, sections)


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def _parse_markdown(text: str, fallback: str) -> Document:
    headed: list[tuple[tuple[tuple[int, str], ...], str]] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    fence: str | None = None

    def heading(level: int, name: str) -> None:
        nonlocal body
        headed.append((tuple(stack), "\n".join(body)))
        body = []
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, _inline_markdown(name)))

    for line in text.split("\n"):
        if fence is not None:
            body.append(line)
            if line.strip().startswith(fence):
                fence = None
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            body.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            heading(len(atx.group(1)), atx.group(2) or "")
            continue
        setext = _SETEXT.match(line)
        if setext and body and body[-1].strip() and not _is_block_start(body[-1]):
            name = body.pop()
            heading(1 if setext.group(1)[0] == "=" else 2, name.strip())
            continue
        body.append(line)
    headed.append((tuple(stack), "\n".join(body)))
    return _with_title(headed, fallback)


def _is_block_start(line: str) -> bool:
    """A line that cannot be a setext heading's text (a list item, quote, table row)."""
    return bool(re.match(r"^\s*([-*+>|]|\d+[.)])\s", line))


def _inline_markdown(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    return re.sub(r"[*_`]+", "", text).strip()


_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = {
    "p", "div", "section", "article", "main", "header", "footer", "aside", "br", "hr",
    "li", "ul", "ol", "dl", "dt", "dd", "table", "tr", "pre", "blockquote", "figure",
    "figcaption", "form", "fieldset", "address", "details", "summary",
}  # fmt: skip
# Not content: code, styles, and site navigation menus.
_SKIPPED = {"script", "style", "noscript", "template", "svg", "iframe", "object", "nav"}
# What <head> may hold. </head> is optional (HTML5): any other tag, or text, starts the body.
_HEAD_CONTENT = {"title", "meta", "link", "base", "style", "script", "noscript", "template"}
_VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source"}


class _HtmlSections(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headed: list[tuple[tuple[tuple[int, str], ...], str]] = []
        self.stack: list[tuple[int, str]] = []
        self.body: list[str] = []
        self.heading: list[str] | None = None
        self.heading_level = 0
        self.skip_depth = 0
        self.in_head = False
        self.page_title: list[str] | None = None
        self.title = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self.in_head = True
            return
        if self.in_head and tag not in _HEAD_CONTENT and not self.skip_depth:
            self.in_head = False
        if tag == "title" and not self.title:
            self.page_title = []
            return
        if tag in _SKIPPED and tag not in _VOID:
            self.skip_depth += 1
            return
        if self.skip_depth or self.in_head:
            return
        if tag in _HEADINGS:
            self.heading, self.heading_level = [], _HEADINGS[tag]
        elif tag in _BLOCKS or tag in ("td", "th"):
            self.body.append("\n" if tag not in ("td", "th") else " | ")
            if tag == "li":
                self.body.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.page_title is not None:
            self.title = " ".join("".join(self.page_title).split())
            self.page_title = None
            return
        if tag == "head":
            self.in_head = False
            return
        if tag in _SKIPPED:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth or self.in_head:
            return
        if tag in _HEADINGS and self.heading is not None:
            name = " ".join("".join(self.heading).split())
            self.heading = None
            self.headed.append((tuple(self.stack), _tidy("".join(self.body))))
            self.body = []
            while self.stack and self.stack[-1][0] >= self.heading_level:
                self.stack.pop()
            self.stack.append((self.heading_level, name))
        elif tag in _BLOCKS:
            self.body.append("\n")

    def handle_data(self, data: str) -> None:
        if self.page_title is not None:
            self.page_title.append(data)
            return
        if self.skip_depth or (self.in_head and not data.strip()):
            return
        self.in_head = False  # text outside the head's elements starts the body
        if self.heading is not None:
            self.heading.append(data)
        else:
            self.body.append(data)

    def finish(self) -> None:
        self.close()
        self.headed.append((tuple(self.stack), _tidy("".join(self.body))))


def _tidy(text: str) -> str:
    """Collapse HTML whitespace: spaces within lines, at most one blank line between blocks."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _parse_html(text: str, fallback: str) -> Document:
    parser = _HtmlSections()
    parser.feed(text)
    parser.finish()
    # <title> names the page when there is one; otherwise its first heading, as in Markdown.
    document = _with_title(parser.headed, fallback, parser.title)
    # Paragraphs of HTML are separated by single newlines: make them blank lines for chunking.
    document.sections = [Section(s.path, re.sub(r"\n+", "\n\n", s.text)) for s in document.sections]
    return document


def _parse_pdf(data: bytes, fallback: str) -> Document:
    """One section per page ("Page 3"), so citations can name the page."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:
        raise UnreadableFile("PDF support needs pypdf: pip install 'parley[knowledge]'") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableFile("encrypted PDF (needs a password)")
        title = ""
        if reader.metadata is not None and reader.metadata.title:
            title = " ".join(str(reader.metadata.title).split())
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            page_text = page.extract_text() or ""
            sections.append(Section((f"Page {number}",), _pdf_paragraphs(page_text)))
    except UnreadableFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise UnreadableFile(f"unreadable PDF ({type(exc).__name__}: {exc})") from None
    if not any(s.text.strip() for s in sections):
        raise UnreadableFile("no text in the PDF (a scan? run OCR first)")
    return Document(title or fallback, sections)


def _pdf_paragraphs(text: str) -> str:
    # pypdf ends every visual line with a newline; blank lines still separate paragraphs.
    return re.sub(r"[ \t]+\n", "\n", text).strip()
