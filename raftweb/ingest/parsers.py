"""Parsers chosen by sniffing content, not by trusting the file extension.

Each parser is a small class registered in :data:`registry` (a :class:`raftweb.registry.Registry`,
by format name, with the format's file extensions as aliases). Binary formats (PDF, DOCX) are
recognised by their magic bytes; everything else is decoded as text (encoding detected) and the
text parsers bid a confidence score; the extension only breaks ties.

Given :class:`ParseLimits`, parsing refuses oversized work before doing it (ZIP central
directory, PDF page count) and fails documents whose text is over the character limit. Time
and memory limits need a child process: see :mod:`raftweb.ingest.guard`.
"""

from __future__ import annotations

import abc
import io
import json
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from raftweb.ingest.types import (
    SECTION_SEPARATOR,
    CorruptFile,
    EmptyDocument,
    EncryptedDocument,
    NoExtractableText,
    ParsedDocument,
    ParseLimits,
    Section,
    TooLarge,
    UnsupportedType,
    human_bytes,
)
from raftweb.registry import Registry

NO_TEXT_PDF_MESSAGE = "no extractable text (scanned PDF? OCR is not supported)"


def clean_text(text: str) -> str:
    """Normalise newlines and drop NULs (PostgreSQL text cannot hold them)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _suffix(filename: str) -> str:
    return Path(filename).suffix.lower().lstrip(".")


class Parser(abc.ABC):
    """One document format. ``sniff_*`` return a confidence in [0, 1]; 0 means "not mine"."""

    name: ClassVar[str]
    binary: ClassVar[bool] = False
    extensions: ClassVar[tuple[str, ...]] = ()
    # The file is a ZIP container: its central directory is checked against the limits
    # (unpacked size, member count, compression ratio) before ``parse`` runs.
    zip_based: ClassVar[bool] = False
    # Parse time and memory are linear in the input with small constants, so a small input
    # may be parsed in the calling process (see ParseLimits.inline_max_bytes).
    bounded: ClassVar[bool] = False

    def sniff_bytes(self, head: bytes, data: bytes) -> float:  # binary formats override
        return 0.0

    def sniff_text(self, text: str) -> float:  # text formats override
        return 0.0

    @abc.abstractmethod
    def parse(
        self, data: bytes, text: str | None, filename: str, *, limits: ParseLimits | None = None
    ) -> ParsedDocument:
        """Turn the file into sections; raise a :class:`ParseError` subclass on failure.

        ``limits`` lets a parser stop early (e.g. before extracting more pages than allowed);
        the registry checks ZIP containers and the final character count itself.
        """


class ParserRegistry(Registry[Parser]):
    """Parsers by format name (file extensions are aliases), plus detection by content."""

    def __init__(self) -> None:
        super().__init__("parser")

    def detect(self, data: bytes, filename: str = "") -> tuple[Parser, str | None]:
        """Pick the parser for ``data``; returns it and the decoded text (None for binary)."""
        if not data:
            raise EmptyDocument("the file is empty (0 bytes)")
        if not data.strip():
            raise EmptyDocument("the file is empty (only whitespace)")
        ext = _suffix(filename)
        head = data[:8192]
        binary = [(p.sniff_bytes(head, data), p) for p in self.values() if p.binary]
        best = max(binary, key=lambda sp: sp[0], default=(0.0, None))
        if best[1] is not None and best[0] > 0:
            return best[1], None
        text = decode_text(data)
        if not text.strip():
            raise EmptyDocument("the file contains only whitespace")
        scored: list[tuple[float, Parser]] = []
        for p in self.values():
            if p.binary:
                continue
            score = p.sniff_text(text)
            if score > 0 and ext in p.extensions:
                score += 0.2  # the extension only breaks ties between plausible readings
            scored.append((score, p))
        score, parser = max(scored, key=lambda sp: sp[0])
        if score <= 0:
            raise UnsupportedType("unsupported file type")
        return parser, text

    def parse(
        self, data: bytes, filename: str = "", *, limits: ParseLimits | None = None
    ) -> ParsedDocument:
        parser, text = self.detect(data, filename)
        return self.parse_detected(parser, data, text, filename, limits=limits)

    def parse_detected(
        self,
        parser: Parser,
        data: bytes,
        text: str | None,
        filename: str = "",
        *,
        limits: ParseLimits | None = None,
    ) -> ParsedDocument:
        """Parse with the parser :meth:`detect` chose (callers that detect first, to decide
        where to parse, do not pay for detection twice)."""
        if limits is not None and parser.zip_based:
            check_zip(data, limits, kind=parser.name.upper())
        doc = parser.parse(data, text, filename, limits=limits)
        doc.sections = [s for s in doc.sections if s.text.strip()]
        if limits is not None:
            check_chars(doc, limits)
        for section in doc.sections:  # titles come from metadata too: same cleaning as text
            section.title = clean_text(section.title).strip()[:300].rstrip()
        doc.title = clean_text(doc.title).strip()[:300].rstrip()
        if not doc.sections:
            raise EmptyDocument(f"no text found in this {parser.name.upper()} file")
        if not doc.title:
            doc.title = Path(filename).stem if filename else ""
        return doc


registry = ParserRegistry()

P = TypeVar("P", bound=type[Parser])


def register_parser(cls: P) -> P:
    """Class decorator: register one shared instance of ``cls`` as ``cls.name``, with its
    extensions as aliases (parsers are stateless)."""
    registry.add(cls.name, cls(), *(e for e in cls.extensions if e != cls.name))
    return cls


def check_zip(data: bytes, limits: ParseLimits, *, kind: str = "ZIP") -> None:
    """Refuse a ZIP container whose central directory promises too much work.

    Only the central directory is read (names and declared sizes); nothing is inflated. A
    broken archive passes: its parser reports it as corrupt, with the more useful message.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return
    if len(members) > limits.max_zip_members:
        raise TooLarge(
            f"{kind} holds {len(members):,} files, over the {limits.max_zip_members:,}-file limit"
        )
    total = sum(info.file_size for info in members)
    if total > limits.max_unzipped_bytes:
        raise TooLarge(
            f"{kind} unpacks to {human_bytes(total)}, over the "
            f"{human_bytes(limits.max_unzipped_bytes)} limit"
        )
    for info in members:
        if (
            info.file_size > limits.zip_ratio_min_bytes
            and info.file_size > limits.max_zip_ratio * max(info.compress_size, 1)
        ):
            ratio = info.file_size / max(info.compress_size, 1)
            raise TooLarge(
                f"{kind} member {info.filename!r} unpacks {ratio:,.0f}:1 "
                f"({human_bytes(info.compress_size)} to {human_bytes(info.file_size)}), over the "
                f"{limits.max_zip_ratio:g}:1 limit"
            )


def check_chars(doc: ParsedDocument, limits: ParseLimits) -> None:
    """Fail a document whose extracted text is over the limit (never cut it silently)."""
    total = sum(len(s.text) for s in doc.sections)
    total += len(SECTION_SEPARATOR) * max(0, len(doc.sections) - 1)
    if total > limits.max_chars:
        raise TooLarge(
            f"document has {total:,} characters of text, over the "
            f"{limits.max_chars:,}-character limit"
        )


_BINARY_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"\x1f\x8b",
    b"BZh",
    b"7z\xbc\xaf",
    b"Rar!",
    b"\x7fELF",
    b"MZ",
    b"\xd0\xcf\x11\xe0",
    b"OggS",
    b"ID3",
    b"fLaC",
    b"RIFF",
    b"%!PS",
)


_PREFERRED_ENCODINGS = ("cp1252", "latin_1", "iso8859_15")


def decode_text(data: bytes) -> str:
    """Decode bytes as text, detecting the encoding; binary data raises UnsupportedType."""
    if data.startswith(b"\xef\xbb\xbf"):
        return clean_text(data[3:].decode("utf-8", errors="replace"))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return clean_text(data.decode("utf-16", errors="replace"))
    head = data[:8192]
    if head.startswith(_BINARY_MAGIC) or head.startswith(b"PK\x03\x04") or b"\x00" in head:
        raise UnsupportedType("unsupported file type (binary data)")
    try:
        return clean_text(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    results = list(from_bytes(data))
    if not results:
        raise UnsupportedType("unsupported file type (binary data or unknown text encoding)")
    best = min(results, key=lambda m: m.chaos)
    # Single-byte code pages are often indistinguishable by statistics; when one of the common
    # Western ones is (almost) as clean as the winner, it is by far the likelier real encoding.
    for preferred in _PREFERRED_ENCODINGS:
        for match in results:
            if match.encoding == preferred and match.chaos <= best.chaos + 0.1:
                return clean_text(str(match))
    return clean_text(str(best))


# --------------------------------------------------------------------------- PDF
@register_parser
class PdfParser(Parser):
    name = "pdf"
    binary = True
    extensions = ("pdf",)

    def sniff_bytes(self, head: bytes, data: bytes) -> float:
        return 1.0 if b"%PDF-" in head[:1024] else 0.0

    def parse(
        self, data: bytes, text: str | None, filename: str, *, limits: ParseLimits | None = None
    ) -> ParsedDocument:
        from pypdf import PdfReader

        try:
            reader = PdfReader(io.BytesIO(data))
        except Exception as exc:  # pypdf raises many types for broken files
            raise CorruptFile(f"corrupt PDF: {exc}") from exc
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")  # an empty user password is common and harmless
            except Exception:
                ok = 0
            if not ok:
                raise EncryptedDocument(
                    "the PDF is encrypted (password protected); upload an unencrypted copy"
                )
        sections: list[Section] = []
        chars = 0
        try:
            pages = list(reader.pages)  # walks the page tree; no page content is decoded yet
            if limits is not None and len(pages) > limits.max_pages:
                raise TooLarge(
                    f"PDF has {len(pages):,} pages, over the {limits.max_pages:,}-page limit"
                )
            for number, page in enumerate(pages, start=1):
                page_text = clean_text(page.extract_text() or "").strip()
                if page_text:
                    sections.append(Section(text=page_text, page=number))
                    chars += len(page_text) + len(SECTION_SEPARATOR)
                    if limits is not None and chars > limits.max_chars + len(SECTION_SEPARATOR):
                        raise TooLarge(
                            f"PDF text passes the {limits.max_chars:,}-character limit on page "
                            f"{number:,} of {len(pages):,}"
                        )
        except (EncryptedDocument, TooLarge):
            raise
        except Exception as exc:
            raise CorruptFile(f"corrupt PDF: {exc}") from exc
        if not sections:
            raise NoExtractableText(NO_TEXT_PDF_MESSAGE)
        title = ""
        try:
            if reader.metadata and reader.metadata.title:
                title = str(reader.metadata.title).strip()
        except Exception:
            title = ""
        return ParsedDocument(
            sections=sections, kind=self.name, title=title, metadata={"pages": str(len(pages))}
        )


# --------------------------------------------------------------------------- DOCX
@register_parser
class DocxParser(Parser):
    name = "docx"
    binary = True
    extensions = ("docx",)
    zip_based = True

    def sniff_bytes(self, head: bytes, data: bytes) -> float:
        if not head.startswith(b"PK\x03\x04"):
            return 0.0
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = set(zf.namelist())
        except zipfile.BadZipFile:
            # A broken ZIP: only claim it when the name says DOCX, so the error is specific.
            return 0.5 if b"word/" in data[:65536] else 0.0
        return 1.0 if "word/document.xml" in names else 0.0

    def parse(
        self, data: bytes, text: str | None, filename: str, *, limits: ParseLimits | None = None
    ) -> ParsedDocument:
        import docx
        from docx.table import Table

        try:
            document = docx.Document(io.BytesIO(data))
        except Exception as exc:
            raise CorruptFile(f"corrupt DOCX: {exc}") from exc
        sections: list[Section] = []
        title = ""
        current_title = ""
        lines: list[str] = []
        # Paragraph.style searches styles.xml on every call (0.75 ms a paragraph: 15 s for a
        # 20,000-paragraph manual); the name depends only on the paragraph's style id.
        style_names: dict[str | None, str] = {}

        def style_name(paragraph: Any) -> str:
            style_id = paragraph._p.style  # w:pPr/w:pStyle/@w:val, None for the default style
            if style_id not in style_names:
                style = paragraph.style
                style_names[style_id] = (style.name if style is not None else "") or ""
            return style_names[style_id]

        def flush() -> None:
            if any(line.strip() for line in lines):
                sections.append(Section(text="\n".join(lines).strip(), title=current_title))
            lines.clear()

        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    cells = [c.text.strip() for c in row.cells]
                    if any(cells):
                        lines.append(" | ".join(cells))
                continue
            para_text = clean_text(block.text).strip()
            style = style_name(block)
            if style.startswith(("Heading", "Title")) and para_text:
                flush()
                current_title = para_text
                title = title or para_text
            if para_text:
                lines.append(para_text)
        flush()
        try:
            title = (document.core_properties.title or "").strip() or title
        except Exception:
            pass
        return ParsedDocument(sections=sections, kind=self.name, title=title)


# --------------------------------------------------------------------------- JSON / JSONL
_TEXT_KEYS = ("text", "content", "body")
_TITLE_KEYS = ("title", "api_name", "name", "id")


def _load_json_records(text: str) -> list[Any] | None:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        value = json.loads(stripped)
        return value if isinstance(value, list) else [value]
    except (ValueError, RecursionError):  # deeply nested arrays: not records we can use
        pass
    records: list[Any] = []
    for line in stripped.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError):
            return None
    return records


def _render_record(record: dict[str, Any]) -> str:
    """API-doc records read best as ``key: value`` lines (nested values as compact JSON)."""
    lines = []
    for key, value in record.items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        rendered = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f"{key}: {clean_text(rendered).strip()}")
    return "\n".join(lines)


def _record_title(record: dict[str, Any]) -> str:
    for key in _TITLE_KEYS:
        value = record.get(key)
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value).strip()[:200]
    return ""


@register_parser
class JsonParser(Parser):
    name = "json"
    extensions = ("json", "jsonl", "ndjson")
    bounded = True

    def sniff_text(self, text: str) -> float:
        records = _load_json_records(text)
        return 0.95 if records is not None and records else 0.0

    def parse(
        self, data: bytes, text: str | None, filename: str, *, limits: ParseLimits | None = None
    ) -> ParsedDocument:
        records = _load_json_records(text or "")
        if not records:
            raise EmptyDocument("the JSON file holds no records")
        dicts = [r for r in records if isinstance(r, dict)]
        strings = [r for r in records if isinstance(r, str)]
        if strings and not dicts:
            return ParsedDocument(
                sections=[Section(text=clean_text(s)) for s in strings], kind=self.name
            )
        if not dicts:
            raise UnsupportedType(
                "JSON must be objects with a 'text' field, API-doc records, or strings"
            )
        text_key = next(
            (k for k in _TEXT_KEYS if all(isinstance(d.get(k), str) for d in dicts)), None
        )
        if text_key is not None:
            sections = [
                Section(
                    text=clean_text(d[text_key]).strip(), title=str(d.get("title") or "").strip()
                )
                for d in dicts
            ]
            return ParsedDocument(sections=sections, kind=self.name, mode="text")
        # No text field: API-documentation style records, each one chunk (RAFT's "api" type).
        sections = [Section(text=_render_record(d), title=_record_title(d)) for d in dicts]
        return ParsedDocument(sections=sections, kind=self.name, mode="records")


# --------------------------------------------------------------------------- HTML
_HTML_STRONG = re.compile(
    r"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", re.I | re.S
)
_HTML_TAGS = re.compile(r"<(html|head|body|div|p|span|a|table|br|meta|script|h[1-6])[\s>/]", re.I)
_TITLE_TAG = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


@register_parser
class HtmlParser(Parser):
    name = "html"
    extensions = ("html", "htm", "xhtml")

    def sniff_text(self, text: str) -> float:
        head = text[:4096]
        if _HTML_STRONG.match(head):
            return 1.0
        tags = len(_HTML_TAGS.findall(head))
        return 0.7 if tags >= 5 else (0.35 if tags >= 2 else 0.0)

    def parse(
        self, data: bytes, text: str | None, filename: str, *, limits: ParseLimits | None = None
    ) -> ParsedDocument:
        import html as html_lib

        import trafilatura

        source = text or ""
        extracted = trafilatura.extract(source, include_comments=False, include_tables=True)
        if not extracted or not extracted.strip():
            # Short pages can fall under the precision heuristics; ask for recall before giving up.
            extracted = trafilatura.extract(
                source, include_comments=False, include_tables=True, favor_recall=True
            )
        if not extracted or not extracted.strip():
            extracted = _strip_tags(source)
        title = ""
        match = _TITLE_TAG.search(source[:65536])
        if match:
            title = html_lib.unescape(re.sub(r"\s+", " ", match.group(1))).strip()
        return ParsedDocument(
            sections=[Section(text=clean_text(extracted).strip(), title=title)],
            kind=self.name,
            title=title,
        )


def _strip_tags(source: str) -> str:
    """Fallback when trafilatura finds no main content: visible text of the page."""
    from html.parser import HTMLParser

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in ("script", "style", "noscript", "template"):
                self.skip += 1

        def handle_endtag(self, tag: str) -> None:
            if tag in ("script", "style", "noscript", "template") and self.skip:
                self.skip -= 1
            elif tag in ("p", "div", "li", "tr", "h1", "h2", "h3", "h4", "br"):
                self.parts.append("\n")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = _Text()
    parser.feed(source)
    return re.sub(r"\n\s*\n+", "\n\n", "".join(parser.parts)).strip()


# --------------------------------------------------------------------------- Markdown
# Greedy to the end of the line, trailing "#"s stripped in Python (_heading_title): the lazy
# "(.+?)[ \t#]*$" this replaces backtracked quadratically over long runs of spaces, so one
# 50 kB line took seconds and a 1 MB file half an hour.
_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+)$", re.M)
_MD_HINTS = re.compile(r"^(```|~~~|[-*+] \S|\d+\. \S|> \S)|\[[^\]]+\]\([^)]+\)|\*\*[^*]+\*\*", re.M)


def _heading_title(match: re.Match[str]) -> str:
    """The heading text without the optional closing "#"s (as the old lazy pattern read it)."""
    raw = match.group(2)
    return (raw.rstrip(" \t#") or raw[:1]).strip()


@register_parser
class MarkdownParser(Parser):
    name = "markdown"
    extensions = ("md", "markdown", "mdown", "mkd")
    bounded = True

    def sniff_text(self, text: str) -> float:
        head = text[:16384]
        headings = len(_MD_HEADING.findall(head))
        hints = len(_MD_HINTS.findall(head))
        if headings >= 1 and headings + hints >= 2:
            return 0.6
        if headings or hints >= 3:
            return 0.3
        return 0.05  # any text is plausibly Markdown; the .md extension lifts this above plain

    def parse(
        self, data: bytes, text: str | None, filename: str, *, limits: ParseLimits | None = None
    ) -> ParsedDocument:
        source = text or ""
        sections: list[Section] = []
        matches = list(_MD_HEADING.finditer(source))
        if not matches or matches[0].start() > 0:
            end = matches[0].start() if matches else len(source)
            sections.append(Section(text=source[:end].strip()))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(source)
            sections.append(Section(text=source[m.start() : end].strip(), title=_heading_title(m)))
        title = _heading_title(matches[0]) if matches and matches[0].group(1) == "#" else ""
        return ParsedDocument(sections=sections, kind=self.name, title=title)


# --------------------------------------------------------------------------- plain text
@register_parser
class TextParser(Parser):
    name = "text"
    extensions = ("txt", "text", "log", "csv", "rst")
    bounded = True

    def sniff_text(self, text: str) -> float:
        return 0.1

    def parse(
        self, data: bytes, text: str | None, filename: str, *, limits: ParseLimits | None = None
    ) -> ParsedDocument:
        source = (text or "").strip()
        first_line = source.split("\n", 1)[0].strip()
        # A short first line without final punctuation reads as the document's title.
        title = (
            first_line
            if 0 < len(first_line) <= 120 and not first_line.endswith((".", ",", ";"))
            else ""
        )
        return ParsedDocument(
            sections=[Section(text=source, title=title)], kind=self.name, title=title
        )


def parse_bytes(
    data: bytes, filename: str = "", *, limits: ParseLimits | None = None
) -> ParsedDocument:
    """Parse an uploaded file's bytes; raises a :class:`ParseError` subclass with a clear message.

    This parses in the calling process: ``limits`` add the size checks (ZIP, pages, characters)
    but not the time and memory limits. Untrusted uploads go through
    :func:`raftweb.ingest.guard.parse_guarded`.
    """
    return registry.parse(data, filename, limits=limits)


def parse_file(path: str | Path, *, limits: ParseLimits | None = None) -> ParsedDocument:
    path = Path(path)
    return registry.parse(path.read_bytes(), path.name, limits=limits)


def supported_kinds() -> Iterable[str]:
    return registry.names()
