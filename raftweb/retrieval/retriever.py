"""Dense, BM25 and hybrid (RRF) search over one knowledge base's indexes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from raftweb.retrieval.bm25 import BM25Index
from raftweb.retrieval.embedder import Embedder
from raftweb.retrieval.fusion import DEFAULT_RRF_K, reciprocal_rank_fusion
from raftweb.retrieval.store import VectorStore
from raftweb.retrieval.types import SEARCH_MODES, SearchHit


class RetrievalError(ValueError):
    pass


@dataclass
class Retriever:
    """Search one knowledge base: ``store``/``collection`` hold its vectors for one embedding
    version, ``bm25`` its keyword index (which also stores chunk text and metadata)."""

    store: VectorStore
    collection: str
    bm25: BM25Index
    embedder: Embedder
    rrf_k: int = DEFAULT_RRF_K
    candidates: int = 50  # per-list pool before fusion: deep enough that fusion can promote

    def search(
        self,
        query: str,
        *,
        mode: str = "hybrid",
        k: int = 5,
        document_ids: Sequence[int] | None = None,
        query_vector: np.ndarray | None = None,
    ) -> list[SearchHit]:
        if mode not in SEARCH_MODES:
            raise RetrievalError(
                f"unknown search mode {mode!r}; use one of {', '.join(SEARCH_MODES)}"
            )
        query = (query or "").strip()
        if not query or k <= 0:
            return []
        pool = max(k, self.candidates)
        dense: list[tuple[str, float]] = []
        sparse: list[tuple[str, float]] = []
        if mode in ("dense", "hybrid"):
            vector = query_vector if query_vector is not None else self.embedder.encode_query(query)
            dense = self.store.query(
                self.collection, vector, k if mode == "dense" else pool, document_ids
            )
        if mode in ("bm25", "hybrid"):
            sparse = self.bm25.search(query, k if mode == "bm25" else pool, document_ids)
        if mode == "dense":
            ranked = dense[:k]
        elif mode == "bm25":
            ranked = sparse[:k]
        else:
            ranked = reciprocal_rank_fusion(
                [[c for c, _ in dense], [c for c, _ in sparse]], k=self.rrf_k
            )[:k]
        dense_rank = {c: i for i, (c, _) in enumerate(dense, start=1)}
        bm25_rank = {c: i for i, (c, _) in enumerate(sparse, start=1)}
        stored = self.bm25.get([c for c, _ in ranked])
        hits: list[SearchHit] = []
        for chunk_id, score in ranked:
            rec = stored.get(chunk_id)
            if rec is None:  # vector without a stored chunk (half-deleted document): skip it
                continue
            hits.append(
                SearchHit(
                    chunk_id=chunk_id,
                    document_id=rec.document_id,
                    document_name=rec.document_name,
                    page=rec.page,
                    text=rec.text,
                    score=float(score),
                    start=rec.start,
                    end=rec.end,
                    dense_rank=dense_rank.get(chunk_id),
                    bm25_rank=bm25_rank.get(chunk_id),
                )
            )
        return hits


def rank_documents(hits: Sequence[SearchHit]) -> list[int]:
    """Document ids ranked by their best chunk (first occurrence in the hit order)."""
    seen: dict[int, None] = {}
    for hit in hits:
        seen.setdefault(hit.document_id, None)
    return list(seen)
