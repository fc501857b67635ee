"""Document ingestion engine: parse (by sniffing) and chunk. Never imports Django."""

from __future__ import annotations

from raftweb.ingest.chunking import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    Chunk,
    Chunker,
    chunk_document,
    chunkers,
    content_hash,
    whitespace_token_offsets,
)
from raftweb.ingest.parsers import NO_TEXT_PDF_MESSAGE, Parser, parse_bytes, parse_file, registry
from raftweb.ingest.types import (
    CorruptFile,
    EmptyDocument,
    EncryptedDocument,
    NoExtractableText,
    ParsedDocument,
    ParseError,
    Section,
    UnsupportedType,
)

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
    "NO_TEXT_PDF_MESSAGE",
    "Chunk",
    "Chunker",
    "CorruptFile",
    "EmptyDocument",
    "EncryptedDocument",
    "NoExtractableText",
    "ParseError",
    "ParsedDocument",
    "Parser",
    "Section",
    "UnsupportedType",
    "chunk_document",
    "chunkers",
    "content_hash",
    "parse_bytes",
    "parse_file",
    "registry",
    "whitespace_token_offsets",
]
