"""Citations: the numbered quotes of an answer, each checked against the chunk it came from.

This is part of the RAFT format (a citation is a verified quote), so chat, the
OpenAI-compatible endpoint and evaluation all build citations here and nowhere else. The
quotes come from :func:`raftweb.raft.answer.parse_answer` (the one quote splitter), so
citation ``n`` is the answer's quote ``n - 1`` — the segment a renderer shows with index
``n - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raftweb.raft.quotes import DEFAULT_QUOTE_THRESHOLD, verify_quotes

if TYPE_CHECKING:
    from raftweb.retrieval.types import SearchHit


@dataclass(frozen=True, slots=True)
class Citation:
    """One numbered quote of an answer, checked against the chunks it was given."""

    n: int
    quote: str
    verified: bool
    document: str = ""
    document_id: int | None = None
    page: int | None = None
    chunk_id: str | None = None
    start: int | None = None
    end: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "quote": self.quote,
            "verified": self.verified,
            "document": self.document,
            "document_id": self.document_id,
            "page": self.page,
            "chunk_id": self.chunk_id,
            "start": self.start,
            "end": self.end,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Citation:
        return cls(**{k: data.get(k) for k in cls.__slots__ if k in data})  # type: ignore[arg-type]


def cite(
    quotes: Sequence[str],
    hits: Sequence[SearchHit],
    *,
    threshold: float = DEFAULT_QUOTE_THRESHOLD,
) -> list[Citation]:
    """Numbered citations for the quotes (``parse_answer(...).quotes``, in order), each
    located in the chunk it really came from."""
    if not quotes:
        return []
    by_key = {str(h.chunk_id): h for h in hits}
    checks = verify_quotes(
        list(quotes), {k: h.text for k, h in by_key.items()}, threshold=threshold
    )
    citations: list[Citation] = []
    for n, check in enumerate(checks, start=1):
        hit = by_key.get(str(check.doc_key)) if check.verified else None
        if hit is None:
            # An unverified quote points nowhere: showing its "closest" chunk would lend it
            # a source it does not have.
            citations.append(Citation(n=n, quote=check.quote, verified=False))
            continue
        citations.append(
            Citation(
                n=n,
                quote=check.quote,
                verified=True,
                document=hit.document_name,
                document_id=hit.document_id,
                page=hit.page,
                chunk_id=hit.chunk_id,
                start=check.start,
                end=check.end,
            )
        )
    return citations
