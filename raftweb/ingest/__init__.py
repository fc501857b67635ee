"""Document ingestion engine: parse (by sniffing) and chunk. Never imports Django.

Untrusted uploads are parsed with :func:`parse_guarded` (a child process under
:class:`ParseLimits`); :func:`parse_bytes` parses in the calling process.
"""

from __future__ import annotations

from raftweb.ingest.chunking import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    Chunk,
    Chunker,
    chunk_document,
    chunkers,
    content_hash,
    register_chunker,
    whitespace_token_offsets,
)
from raftweb.ingest.guard import DEFAULT_LIMITS, parse_guarded
from raftweb.ingest.parsers import (
    NO_TEXT_PDF_MESSAGE,
    Parser,
    parse_bytes,
    parse_file,
    register_parser,
    registry,
)
from raftweb.ingest.types import (
    CorruptFile,
    EmptyDocument,
    EncryptedDocument,
    LimitExceeded,
    NoExtractableText,
    ParsedDocument,
    ParseError,
    ParseLimits,
    ParserOutOfMemory,
    ParseTimeout,
    Section,
    TooLarge,
    UnsupportedType,
)

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_LIMITS",
    "NO_TEXT_PDF_MESSAGE",
    "Chunk",
    "Chunker",
    "CorruptFile",
    "EmptyDocument",
    "EncryptedDocument",
    "LimitExceeded",
    "NoExtractableText",
    "ParseError",
    "ParseLimits",
    "ParseTimeout",
    "ParsedDocument",
    "Parser",
    "ParserOutOfMemory",
    "Section",
    "TooLarge",
    "UnsupportedType",
    "chunk_document",
    "chunkers",
    "content_hash",
    "parse_bytes",
    "parse_file",
    "parse_guarded",
    "register_chunker",
    "register_parser",
    "registry",
    "whitespace_token_offsets",
]
