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
