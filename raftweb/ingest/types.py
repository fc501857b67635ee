"""Data types and errors shared by parsers and chunkers (engine: no Django)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SECTION_SEPARATOR = "\n\n"


class ParseError(Exception):
    """Base class: a document could not be turned into text. The message is user-facing."""

    code = "parse_error"


class UnsupportedType(ParseError):
    code = "unsupported_type"


class CorruptFile(ParseError):
    code = "corrupt_file"


class EncryptedDocument(ParseError):
    code = "encrypted"


class EmptyDocument(ParseError):
    code = "empty"


class NoExtractableText(ParseError):
    code = "no_text"


class LimitExceeded(ParseError):
    """A document exceeded one of the :class:`ParseLimits` (hostile or just too big)."""

    code = "limit_exceeded"


class TooLarge(LimitExceeded):
    """Too many pages, characters, ZIP members or unpacked bytes (checked before the work)."""

    code = "too_large"


class ParseTimeout(LimitExceeded):
    code = "timeout"


class ParserOutOfMemory(LimitExceeded):
    code = "out_of_memory"


MB = 1_000_000
GiB = 1 << 30


def human_bytes(n: int) -> str:
    """A size for a user-facing message: "200 MB", "2 GiB" (memory limits are binary)."""
    if n >= GiB and n % (GiB // 4) == 0:
        return f"{n / GiB:g} GiB"
    if n >= 10 * MB:
        return f"{n / MB:.0f} MB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    return f"{max(1, round(n / 1000))} kB"


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """How much work one document may cause; a hostile file fails instead of taking the worker.

    The size checks run before the expensive step they guard: a ZIP-based format's central
    directory is read before its parser unpacks anything, a PDF's page count before any page
    is extracted. The time and memory limits need a separate process and are enforced by
    :func:`raftweb.ingest.guard.parse_guarded`.
    """

    # ZIP-based formats (DOCX): the sum of the members' declared uncompressed sizes. zipfile
    # never returns more than a member's declared size, so the declaration is a true bound.
    max_unzipped_bytes: int = 100 * MB
    max_zip_members: int = 2000
    # Members above ``zip_ratio_min_bytes`` may not inflate more than this; real DOCX XML
    # compresses 5-20:1, a run of zeros 1000:1.
    max_zip_ratio: float = 100.0
    zip_ratio_min_bytes: int = 1 * MB
    max_pages: int = 2000
    # Extracted text; over it the document fails (a silent cut would index half a manual).
    max_chars: int = 5_000_000
    # Wall-clock seconds for one document's parse, child start-up excluded.
    max_seconds: float = 120.0
    # Address space the parse may add on top of the child's baseline (interpreter + parser
    # libraries, which numpy's thread buffers can make large and machine-dependent).
    max_memory_bytes: int = 2 * GiB
    # Inputs up to this size whose detected parser is ``bounded`` (plain text, Markdown,
    # JSON: linear-time parsers) are parsed in the calling process: a child costs more than
    # their whole parse. Set to 0 to send every document to a child.
    inline_max_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in (
            "max_unzipped_bytes",
            "max_zip_members",
            "max_zip_ratio",
            "max_pages",
            "max_chars",
            "max_seconds",
            "max_memory_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ParseLimits.{name} must be positive")


@dataclass(slots=True)
class Section:
    """A page (PDF), a heading-delimited part (Markdown/DOCX) or a record (JSON)."""

    text: str
    page: int | None = None
    title: str = ""


@dataclass(slots=True)
class ParsedDocument:
    """What every parser returns.

    ``text`` is the sections joined by :data:`SECTION_SEPARATOR`; chunk offsets index into it,
    so a chunk's ``text == document.text[start:end]`` always holds.
    ``mode == "records"`` means each section is one self-contained record (API docs) and
    becomes exactly one chunk.
    """

    sections: list[Section]
    kind: str
    title: str = ""
    mode: Literal["text", "records"] = "text"
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return SECTION_SEPARATOR.join(s.text for s in self.sections)

    def section_offsets(self) -> list[int]:
        """Start offset of each section inside :attr:`text`."""
        offsets: list[int] = []
        pos = 0
        for s in self.sections:
            offsets.append(pos)
            pos += len(s.text) + len(SECTION_SEPARATOR)
        return offsets

    @property
    def pages(self) -> int | None:
        pages = [s.page for s in self.sections if s.page is not None]
        return max(pages) if pages else None
