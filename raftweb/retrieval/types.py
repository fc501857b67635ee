"""Result types shared by search, chat and RAFT generation (engine: no Django)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

SearchMode = Literal["dense", "bm25", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("hybrid", "dense", "bm25")


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One retrieved chunk. ``score`` is cosine similarity (dense), BM25 score (bm25) or the
    reciprocal-rank-fusion score (hybrid); higher is better within one result list."""

    chunk_id: str
    document_id: int
    document_name: str
    page: int | None
    text: str
    score: float
    start: int
    end: int
    dense_rank: int | None = None
    bm25_rank: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
