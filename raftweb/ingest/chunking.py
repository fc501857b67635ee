"""Token-window chunking that prefers paragraph, then sentence, then line/word boundaries.

Tokens are counted with the embedding model's tokenizer (pass its ``token_offsets``); each section
is tokenized ONCE with character offsets, boundary positions are found with regexes and mapped to
token indices with numpy, so chunking costs a fraction of embedding even for huge documents.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np

from raftweb.ingest.types import ParsedDocument
from raftweb.registry import Registry

TokenOffsets = Callable[[str], Sequence[tuple[int, int]]]

DEFAULT_CHUNK_SIZE = 300
DEFAULT_CHUNK_OVERLAP = 30

_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_SENTENCE = re.compile(r"[.!?;:][\"')\]]*\s")
_NEWLINE = re.compile(r"\n")
_WORD_TOKEN = re.compile(r"\w+|[^\w\s]")


def whitespace_token_offsets(text: str) -> list[tuple[int, int]]:
    """A dependency-free tokenizer (words and punctuation) for tests and fallbacks."""
    return [m.span() for m in _WORD_TOKEN.finditer(text)]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Chunk:
    """A slice of a parsed document: ``document.text[start:end] == text``."""

    ordinal: int
    text: str
    start: int
    end: int
    page: int | None
    token_count: int
    hash: str
    title: str = ""

    @property
    def index_text(self) -> str:
        """What gets embedded and BM25-indexed: the section title travels with every chunk,
        so a chunk cut from the middle of a section still says what it is about."""
        if self.title and not self.text.lstrip().startswith(self.title):
            return f"{self.title}\n{self.text}"
        return self.text


class Chunker(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def chunk(
        self,
        doc: ParsedDocument,
        *,
        size: int,
        overlap: int,
        token_offsets: TokenOffsets,
        max_tokens: int | None = None,
    ) -> list[Chunk]:
        """``max_tokens``: the most tokens the embedding model reads (its max sequence length
        less its special tokens); a chunk's index text (title included) fits in it where the
        chunker can cut."""


# Chunkers by name: ``chunkers.get("foo")`` raises UnknownChoice ("unknown chunker 'foo';
# choose one of: record, token").
chunkers: Registry[Chunker] = Registry("chunker")

C = TypeVar("C", bound=type[Chunker])


def register_chunker(cls: C) -> C:
    """Class decorator: register one shared instance of ``cls`` as ``cls.name`` (chunkers are
    stateless; size and overlap are per call)."""
    chunkers.add(cls.name, cls())
    return cls


def _boundary_scores(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """score[j] = how good it is to cut right before token j (0 = inside a word)."""
    n = len(starts)
    score = np.zeros(n + 1, dtype=np.float32)
    if n > 1:
        score[1:n] = np.where(starts[1:] > ends[:-1], 1.0, 0.0)  # whitespace between tokens
    score[n] = 4.0
    for pattern, value in ((_NEWLINE, 1.5), (_SENTENCE, 2.0), (_PARAGRAPH, 3.0)):
        positions = [m.end() for m in pattern.finditer(text)]
        if not positions:
            continue
        idx = np.searchsorted(starts, np.asarray(positions), side="left")
        idx = idx[(idx > 0) & (idx < n)]
        np.maximum.at(score, idx, value)
    return score


def _windows(score: np.ndarray, n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token windows [i, j) of at most ``size`` tokens, cut at the best boundary in the back half."""
    if n <= size:
        return [(0, n)]
    out: list[tuple[int, int]] = []
    i = end = 0
    min_len = max(1, size // 2)
    while i < n:
        hard_end = i + size
        if hard_end >= n:
            out.append((i, n))
            break
        # Each window ends past the previous one: after an overlap step back with no word
        # boundary to start on, the best cut could otherwise be the previous window's again,
        # giving a chunk that lies inside the one before it (found by a property test).
        lo = max(i + min_len, end + 1)
        window = score[lo : hard_end + 1]
        best = window.max()
        end = lo + int(np.flatnonzero(window == best)[-1])
        out.append((i, end))
        # Step back ``overlap`` tokens, starting the next window on a word boundary.
        back = max(i + 1, end - overlap)
        starts_ok = np.flatnonzero(score[back:end] >= 1.0)
        i = back + int(starts_ok[0]) if len(starts_ok) else back
    return out


MIN_WINDOW = 8


def capped_chunk_size(size: int, max_tokens: int | None) -> int:
    """The chunk size ingestion really uses: ``size``, but never more than the embedding model
    reads (``max_tokens``) - tokens beyond it would be missing from the dense index."""
    return size if max_tokens is None else max(MIN_WINDOW, min(size, max_tokens))


def section_window(
    size: int, title: str, max_tokens: int | None, token_offsets: TokenOffsets
) -> int:
    """Token window for one section: the chunk size, less the section title's tokens when the
    title is embedded with every chunk (see :attr:`Chunk.index_text`) and would push it past
    ``max_tokens``."""
    if max_tokens is None:
        return size
    title_tokens = len(token_offsets(title)) if title else 0
    return max(MIN_WINDOW, min(size, max_tokens - title_tokens))


@register_chunker
class TokenWindowChunker(Chunker):
    name = "token"

    def chunk(
        self,
        doc: ParsedDocument,
        *,
        size: int,
        overlap: int,
        token_offsets: TokenOffsets,
        max_tokens: int | None = None,
    ) -> list[Chunk]:
        if size < 8:
            raise ValueError("chunk size must be at least 8 tokens")
        chunks: list[Chunk] = []
        for section, base in zip(doc.sections, doc.section_offsets(), strict=False):
            text = section.text
            offsets = token_offsets(text)
            if not offsets:
                continue
            arr = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
            starts, ends = arr[:, 0], arr[:, 1]
            score = _boundary_scores(text, starts, ends)
            title = section.title or doc.title
            window = section_window(size, title, max_tokens, token_offsets)
            for i, j in _windows(score, len(starts), window, max(0, min(overlap, window // 2))):
                a, b = int(starts[i]), int(ends[j - 1])
                piece = text[a:b]
                chunks.append(
                    Chunk(
                        ordinal=len(chunks),
                        text=piece,
                        start=base + a,
                        end=base + b,
                        page=section.page,
                        token_count=j - i,
                        hash=content_hash(piece),
                        title=title,
                    )
                )
        return chunks


@register_chunker
class RecordChunker(Chunker):
    """One chunk per record (API docs): a record is only meaningful whole."""

    name = "record"

    def chunk(
        self,
        doc: ParsedDocument,
        *,
        size: int,
        overlap: int,
        token_offsets: TokenOffsets,
        max_tokens: int | None = None,
    ) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section, base in zip(doc.sections, doc.section_offsets(), strict=False):
            text = section.text
            if not text.strip():
                continue
            chunks.append(
                Chunk(
                    ordinal=len(chunks),
                    text=text,
                    start=base,
                    end=base + len(text),
                    page=section.page,
                    token_count=len(token_offsets(text)),
                    hash=content_hash(text),
                    title=section.title,
                )
            )
        return chunks


def chunk_document(
    doc: ParsedDocument,
    *,
    size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = DEFAULT_CHUNK_OVERLAP,
    token_offsets: TokenOffsets = whitespace_token_offsets,
    chunker: str | None = None,
    max_tokens: int | None = None,
) -> list[Chunk]:
    """Chunk a parsed document with the chunker named ``chunker`` (default "token");
    record-mode documents always use the record chunker. An unknown name raises
    :class:`raftweb.registry.UnknownChoice`. ``max_tokens`` caps every window at what the
    embedding model reads (pass :attr:`Embedder.max_input_tokens`, counted with the same
    tokenizer as ``token_offsets``); a record is never cut, whatever its length."""
    name = "record" if doc.mode == "records" else (chunker or "token")
    return chunkers.get(name).chunk(
        doc, size=size, overlap=overlap, token_offsets=token_offsets, max_tokens=max_tokens
    )
