"""Property-based tests of the parsers (hypothesis): whatever bytes arrive, parsing returns a
clean document or raises the documented :class:`ParseError` — never anything else.

Inputs cover random bytes, bytes behind the magic numbers of the binary formats (so the PDF and
DOCX parsers meet corrupt files), random text under every text parser, and HTML built from
tags with hostile content."""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftweb.ingest.parsers import clean_text, parse_bytes, registry
from raftweb.ingest.types import ParsedDocument, ParseError, ParseLimits

# Random member names repeat; a ZIP with duplicate names is itself hostile input.
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")

LIMITS = ParseLimits(max_chars=200_000, max_unzipped_bytes=2_000_000, zip_ratio_min_bytes=10_000)
FILENAMES = st.sampled_from(
    ["", "a.txt", "a.md", "a.html", "a.json", "a.jsonl", "a.pdf", "a.docx", "a.csv", "noext"]
)
MAGIC = st.sampled_from(
    [b"", b"%PDF-1.4\n", b"PK\x03\x04", b"\xef\xbb\xbf", b"\xff\xfe", b"<html>"]
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_document(doc: ParsedDocument) -> None:
    assert isinstance(doc, ParsedDocument)
    assert doc.sections, "a parsed document has at least one section"
    for section in doc.sections:
        assert isinstance(section.text, str) and section.text.strip()
        assert "\x00" not in section.text and "\r" not in section.text
        assert "\x00" not in section.title and len(section.title) <= 300
    assert len(doc.text) <= LIMITS.max_chars


def _parse_or_parse_error(data: bytes, filename: str) -> ParsedDocument | None:
    try:
        doc = parse_bytes(data, filename, limits=LIMITS)
    except ParseError as exc:
        assert str(exc), "a parse error says why"
        return None
    _check_document(doc)
    return doc


@SETTINGS
@given(magic=MAGIC, body=st.binary(max_size=4000), filename=FILENAMES)
def test_it_parses_or_refuses_any_bytes(magic: bytes, body: bytes, filename: str) -> None:
    _parse_or_parse_error(magic + body, filename)


@SETTINGS
@given(text=st.text(max_size=3000), filename=FILENAMES)
def test_it_parses_or_refuses_any_text(text: str, filename: str) -> None:
    data = text.encode("utf-8", errors="surrogatepass")
    _parse_or_parse_error(data, filename)


@SETTINGS
@given(text=st.text(max_size=3000), name=st.sampled_from(["text", "markdown", "html", "json"]))
def test_each_text_parser_takes_any_text(text: str, name: str) -> None:
    """Each text parser on its own, whatever the sniffing would have picked."""
    parser = registry.get(name)
    cleaned = clean_text(text)
    try:
        doc = registry.parse_detected(parser, cleaned.encode(), cleaned, "x", limits=LIMITS)
    except ParseError:
        return
    _check_document(doc)


@SETTINGS
@given(text=st.text(max_size=3000))
def test_markdown_and_text_keep_every_visible_character(text: str) -> None:
    """Plain text and Markdown parsing lose no content: the non-space characters of the
    input are the non-space characters of the sections, in order."""
    cleaned = clean_text(text)
    visible = "".join(cleaned.split())
    for name in ("text", "markdown"):
        try:
            doc = registry.parse_detected(
                registry.get(name), cleaned.encode(), cleaned, "x", limits=LIMITS
            )
        except ParseError:
            assert not visible, f"{name} refused text with content"
            continue
        assert "".join("".join(s.text for s in doc.sections).split()) == visible


TAGS = st.sampled_from(["p", "div", "span", "h1", "h2", "li", "td", "a", "b", "article"])
WORDS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<>&"),
    min_size=0,
    max_size=80,
)


@st.composite
def html_pages(draw: st.DrawFn) -> tuple[str, str]:
    """(page, marker): a page of random tags and text whose <script> holds ``marker``."""
    parts = []
    for _ in range(draw(st.integers(1, 12))):
        tag = draw(TAGS)
        parts.append(f"<{tag}>{draw(WORDS)}</{tag}>")
    marker = "SCRIPTMARKER" + str(draw(st.integers(0, 10**6)))
    hostile = draw(
        st.sampled_from(
            [
                "",
                "<img src=x onerror=alert(1)>",
                "<!--",
                "<![CDATA[",
                "</body></html><html>",
                "<" * 50,
                "<p " + "a" * 500,
            ]
        )
    )
    page = (
        "<html><head><title>" + draw(WORDS) + "</title>"
        f"<script>var s = '{marker}';</script></head><body>"
        + "".join(parts)
        + hostile
        + "</body></html>"
    )
    return page, marker


@SETTINGS
@given(page=html_pages())
def test_html_pages_parse_without_their_scripts(page: tuple[str, str]) -> None:
    source, marker = page
    doc = _parse_or_parse_error(source.encode(), "page.html")
    if doc is not None:
        assert marker not in doc.text and "var s =" not in doc.text


DOCX_MEMBERS = st.sampled_from(
    [
        "word/document.xml",
        "[Content_Types].xml",
        "docProps/core.xml",
        "word/_rels/document.xml.rels",
    ]
)
XML = st.one_of(
    st.just('<?xml version="1.0"?><w:document xmlns:w="x"><w:body><w:p>hi</w:p></w:body>'),
    st.text(max_size=300).map(lambda t: f"<?xml version='1.0'?><a>{t}</a>"),
    st.just('<!DOCTYPE a [<!ENTITY e "' + "x" * 100 + '">]><a>&e;&e;&e;</a>'),
)


@SETTINGS
@given(
    members=st.lists(
        st.tuples(
            # No NUL in names: zipfile itself cannot write one (it cuts the name there).
            st.one_of(
                DOCX_MEMBERS,
                st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=30),
            ),
            st.one_of(st.binary(max_size=2000), XML.map(str.encode)),
        ),
        max_size=5,
    )
)
def test_random_zip_containers_named_docx_are_refused_cleanly(
    members: list[tuple[str, bytes]],
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            try:
                archive.writestr(name, data)
            except (ValueError, UnicodeEncodeError):
                continue
    _parse_or_parse_error(buffer.getvalue(), "random.docx")
