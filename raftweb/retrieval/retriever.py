"""Dense, BM25 and hybrid (RRF) search over one knowledge base's indexes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from raftweb.retrieval.batcher import MicroBatcher
from raftweb.retrieval.bm25 import BM25Index, IndexedChunk
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
        vectors = None if query_vector is None else np.asarray(query_vector)[None, :]
        return self.search_many(
            [query], mode=mode, k=k, document_ids=document_ids, query_vectors=vectors
        )[0]

    def search_many(
        self,
        queries: Sequence[str],
        *,
        mode: str = "hybrid",
        k: int = 5,
        document_ids: Sequence[int] | None = None,
        query_vectors: np.ndarray | None = None,
        like_ids: Sequence[str | None] | None = None,
    ) -> list[list[SearchHit]]:
        """Several searches at once: the queries are embedded together, the vector store is
        asked once for all of them, and each query's lists are fused on their own. One hit
        list per query, in order (empty for an empty query).

        ``like_ids[i]``, when given, names an indexed chunk whose STORED vector is query i's
        dense query (its text still feeds BM25): "chunks like this one" costs a lookup instead
        of running the model over a whole chunk (~130 ms each on 2 cores), which is what made
        generation's hard negatives the bottleneck. Ids without a stored vector are embedded."""
        if mode not in SEARCH_MODES:
            raise RetrievalError(
                f"unknown search mode {mode!r}; use one of {', '.join(SEARCH_MODES)}"
            )
        cleaned = [(q or "").strip() for q in queries]
        live = [i for i, q in enumerate(cleaned) if q]
        if k <= 0 or not live:
            return [[] for _ in cleaned]
        pool = max(k, self.candidates)
        dense: dict[int, list[tuple[str, float]]] = {}
        sparse: dict[int, list[tuple[str, float]]] = {}
        if mode in ("dense", "hybrid"):
            vectors = self._query_vectors(cleaned, live, query_vectors, like_ids)
            found = self.store.query_many(
                self.collection, vectors, k if mode == "dense" else pool, document_ids
            )
            dense = dict(zip(live, found, strict=True))
        if mode in ("bm25", "hybrid"):
            found = self.bm25.search_many(
                [cleaned[i] for i in live], k if mode == "bm25" else pool, document_ids
            )
            sparse = dict(zip(live, found, strict=True))
        ranked: dict[int, list[tuple[str, float]]] = {}
        for i in live:
            if mode == "dense":
                ranked[i] = dense[i][:k]
            elif mode == "bm25":
                ranked[i] = sparse[i][:k]
            else:
                ranked[i] = reciprocal_rank_fusion(
                    [[c for c, _ in dense[i]], [c for c, _ in sparse[i]]], k=self.rrf_k
                )[:k]
        stored = self.bm25.get(list({c for i in live for c, _ in ranked[i]}))
        out: list[list[SearchHit]] = [[] for _ in cleaned]
        for i in live:
            out[i] = _hits(ranked[i], stored, dense.get(i, []), sparse.get(i, []))
        return out

    def _query_vectors(
        self,
        queries: list[str],
        live: list[int],
        given: np.ndarray | None,
        like_ids: Sequence[str | None] | None,
    ) -> np.ndarray:
        if given is not None:
            return np.asarray(given)[live]
        stored: dict[str, np.ndarray] = {}
        if like_ids is not None:
            wanted = [like_ids[i] for i in live if like_ids[i] is not None]
            stored = self.store.get_vectors(self.collection, wanted)  # type: ignore[arg-type]
        rows: dict[int, np.ndarray] = {
            i: stored[like_ids[i]]  # type: ignore[index]
            for i in live
            if like_ids is not None and like_ids[i] in stored
        }
        missing = [i for i in live if i not in rows]
        if missing:
            encoded = self.embedder.encode_queries([queries[i] for i in missing])
            rows.update(zip(missing, encoded, strict=True))
        return np.stack([rows[i] for i in live])


def _hits(
    ranked: Sequence[tuple[str, float]],
    stored: dict[str, IndexedChunk],
    dense: Sequence[tuple[str, float]],
    sparse: Sequence[tuple[str, float]],
) -> list[SearchHit]:
    dense_rank = {c: i for i, (c, _) in enumerate(dense, start=1)}
    bm25_rank = {c: i for i, (c, _) in enumerate(sparse, start=1)}
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


@dataclass(frozen=True, slots=True)
class Lookup:
    """One search whose query is embedded already (``vector`` None: BM25 only or empty)."""

    retriever: Retriever
    query: str
    vector: np.ndarray | None
    mode: str = "hybrid"
    k: int = 5
    document_ids: tuple[int, ...] | None = None  # only these documents' chunks


def run_lookups(items: Sequence[Lookup]) -> list[list[SearchHit]]:
    """The index lookups of several searches, one :meth:`Retriever.search_many` call per
    retriever and mode: one vector-store call for all of its queries.

    Why: a vector-store call costs ~0.85 ms of Python whatever its size (embedded Chroma on 2
    cores: 50 single-query searches 97 ms, the same 50 in one call 9 ms), and under load every
    one of them waited for the GIL behind the event loop."""
    groups: dict[tuple[int, str, int, bool, tuple[int, ...] | None], list[int]] = {}
    for i, item in enumerate(items):
        key = (id(item.retriever), item.mode, item.k, item.vector is None, item.document_ids)
        groups.setdefault(key, []).append(i)
    out: list[list[SearchHit]] = [[] for _ in items]
    for indexes in groups.values():
        first = items[indexes[0]]
        vectors = None
        if first.vector is not None:
            vectors = np.stack([np.asarray(items[i].vector) for i in indexes])
        found = first.retriever.search_many(
            [items[i].query for i in indexes],
            mode=first.mode,
            k=first.k,
            query_vectors=vectors,
            document_ids=first.document_ids,
        )
        for i, hits in zip(indexes, found, strict=True):
            out[i] = hits
    return out


# Concurrent searches (chat turns, API and page searches) meet here once their queries are
# embedded: whatever is waiting when the worker is free runs together; a lone lookup goes at
# once. One thread does every lookup: they need the GIL anyway, and 16 request threads doing
# their own made each vector-store call and BM25 read wait behind the others.
LOOKUPS: MicroBatcher[Lookup, list[SearchHit]] = MicroBatcher(
    run_lookups, max_batch=64, max_wait_s=0.0, name="search-lookups"
)


def rank_documents(hits: Sequence[SearchHit]) -> list[int]:
    """Document ids ranked by their best chunk (first occurrence in the hit order)."""
    seen: dict[int, None] = {}
    for hit in hits:
        seen.setdefault(hit.document_id, None)
    return list(seen)
