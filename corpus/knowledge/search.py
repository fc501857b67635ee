"""Search over a knowledge base (hybrid, dense, BM25) and document-level retrieval evaluation."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings

from corpus.knowledge.indexes import CorpusError, bm25_index, kb_embedder, vector_store
from corpus.models import BASE_VERSION, EmbeddingIndex, KnowledgeBase
from raftweb.core.memo import Memo
from raftweb.metrics import mean, mrr, recall_at_k
from raftweb.retrieval import (
    LazyEmbedder,
    Retriever,
    SearchHit,
    VectorStoreError,
    collection_name,
)
from raftweb.retrieval.retriever import LOOKUPS, Lookup


def resolve_embedding_version(kb: KnowledgeBase, embedding_version: str | None) -> EmbeddingIndex:
    """``None``/"active" → the KB's active version, "base" → base, else that label."""
    version = (
        kb.embedding_version if embedding_version in (None, "", "active") else embedding_version
    )
    index = kb.embedding_indexes.filter(version=version).first()
    if index is None:
        if version == BASE_VERSION:
            index, _ = EmbeddingIndex.objects.get_or_create(
                kb=kb, version=BASE_VERSION, defaults={"model": kb.embedding_model}
            )
        else:
            raise CorpusError(
                f"unknown embedding version {version!r}", code="not_found", status=404
            )
    return index


# --------------------------------------------------------------------------- search
def _config_ttl_s() -> float:
    return float(settings.CONFIG_TTL_S)


# A KB's retriever per embedding version, read once per RAFTWEB_CONFIG_TTL_S rather than for
# every search (two or three queries each: ~20% of an API search's time in the web process
# under 200 concurrent searches). chat/apps.py clears it when the rows behind it are saved.
RETRIEVERS: Memo[tuple[int, str], Retriever] = Memo(_config_ttl_s, name="retrievers")


def _version_key(embedding_version: str | None) -> str:
    return "active" if embedding_version in (None, "", "active") else str(embedding_version)


def retriever_build(kb_id: int, embedding_version: str | None = None) -> Retriever:
    """A new retriever for the KB with id ``kb_id`` (fresh rows; see :func:`_retriever`)."""
    kb = KnowledgeBase.objects.filter(pk=kb_id).first()
    if kb is None:
        raise CorpusError("This knowledge base no longer exists.", code="not_found", status=404)
    index = resolve_embedding_version(kb, _version_key(embedding_version))
    model = index.model or None
    # Loaded when a query is embedded: BM25 and searches from stored vectors need no model.
    embedder = LazyEmbedder(lambda: kb_embedder(kb, model))
    return Retriever(
        store=vector_store(),
        collection=collection_name(kb.index_key, index.version),
        bm25=bm25_index(kb),
        embedder=embedder,  # type: ignore[arg-type]
    )


def _retriever(kb: KnowledgeBase, mode: str, embedding_version: str | None) -> Retriever:
    if mode not in ("hybrid", "dense", "bm25"):
        raise CorpusError(f"unknown search mode {mode!r}; use hybrid, dense or bm25")
    # Built from a fresh row of the KB (the caller's may be old): the result serves everyone.
    key = (kb.pk, _version_key(embedding_version))
    return RETRIEVERS.get(key, lambda: retriever_build(*key))


_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


def _search_slots() -> threading.BoundedSemaphore:
    """At most RAFTWEB_SEARCH_SLOTS searches run at once in a process; the rest wait, blocked.
    Why: the ASGI server gives every request a thread, and 200 runnable threads fighting for
    the GIL starved the one thread that matters - the query batcher's - so 200 concurrent
    searches ran slower than one after another. A waiting thread costs nothing."""
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(settings.SEARCH_SLOTS)
        return _slots


def kb_search(
    *,
    kb: KnowledgeBase,
    query: str,
    mode: str = "hybrid",
    k: int = 5,
    document_ids: Sequence[int] | None = None,
    embedding_version: str | None = None,
) -> list[SearchHit]:
    """Search one knowledge base. Hits carry ``chunk_id == str(Chunk.pk)``.

    Safe to call from many threads at once, and faster so: concurrent searches share the
    embedder's query batcher (their queries are embedded together), then the lookup batcher
    (one vector-store call and one BM25 snapshot for all of them, see
    :data:`raftweb.retrieval.retriever.LOOKUPS`). 200 concurrent API searches on 2 cores:
    each one's vector-store call and BM25 reads were ~40% of the web process's time."""
    retriever = _retriever(kb, mode, embedding_version)
    text = (query or "").strip()
    docs = None if document_ids is None else tuple(sorted({int(d) for d in document_ids}))
    with _store_unavailable_as_503(), _search_slots():
        vector = retriever.embedder.encode_query(text) if text and mode != "bm25" else None
        return LOOKUPS(Lookup(retriever, text, vector, mode, _bounded_k(k), docs))


def kb_search_many(
    *,
    kb: KnowledgeBase,
    queries: Sequence[str],
    mode: str = "hybrid",
    k: int = 5,
    document_ids: Sequence[int] | None = None,
    embedding_version: str | None = None,
    like_chunk_ids: Sequence[int] | None = None,
) -> list[list[SearchHit]]:
    """Several searches of one knowledge base at once (generation's hard negatives, retrieval
    evaluation): one embedding batch and one vector-store call for all; one hit list per query.

    ``like_chunk_ids`` (one per query): chunks whose stored vectors are the dense queries - a
    search for chunks like a chunk of this KB needs no model run (see
    :meth:`Retriever.search_many`)."""
    retriever = _retriever(kb, mode, embedding_version)
    like = None if like_chunk_ids is None else [str(c) for c in like_chunk_ids]
    with _store_unavailable_as_503(), _search_slots():
        return retriever.search_many(
            list(queries), mode=mode, k=_bounded_k(k), document_ids=document_ids, like_ids=like
        )


def _bounded_k(k: int) -> int:
    return max(1, min(int(k), 200))


@contextlib.contextmanager
def _store_unavailable_as_503() -> Iterator[None]:
    try:
        yield
    except VectorStoreError as exc:
        raise CorpusError(str(exc), code="unavailable", status=503) from exc


def kb_retriever(
    *, kb: KnowledgeBase, mode: str = "hybrid", embedding_version: str | None = None
) -> Retriever:
    """A retriever for ``kb`` with its embedding model loaded when ``mode`` embeds queries
    (database reads and, the first time, a model load: call it off the event loop)."""
    retriever = _retriever(kb, mode, embedding_version)
    if mode != "bm25":
        retriever.embedder = retriever.embedder.loaded()  # type: ignore[attr-defined]
    return retriever


async def retriever_search_async(
    retriever: Retriever, query: str, *, mode: str = "hybrid", k: int = 5
) -> list[SearchHit]:
    """Search from a coroutine, holding no thread while it waits.

    The query waits for its encoder batch, then its index lookups wait for theirs
    (:data:`raftweb.retrieval.retriever.LOOKUPS`), both as coroutines. Why: a search thread
    that waited for the encoder was a thread no other search could use, so concurrent chat
    turns reached the query batcher a pool's worth at a time (8 of 50) and waited in line for
    each other; and 50 lookups one by one cost ten times one call for all 50 (bench/chat.py)."""
    text = (query or "").strip()
    vector = None
    if text and mode != "bm25":
        vector = await retriever.embedder.aencode_query(text)
    with _store_unavailable_as_503():
        return await LOOKUPS.acall(Lookup(retriever, text, vector, mode, _bounded_k(k)))


# --------------------------------------------------------------------------- retrieval evaluation
def _name_keys(name: str) -> set[str]:
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return {name, stem}


EVAL_BATCH = 64


def kb_retrieval_evaluate(
    *,
    kb: KnowledgeBase,
    questions: Sequence[dict[str, Any]],
    mode: str = "hybrid",
    k_values: Sequence[int] = (1, 5, 10),
    embedding_version: str | None = None,
) -> dict[str, Any]:
    """Document-level recall@k and MRR. Each question is ``{"question": str, "gold": [names]}``;
    a gold name matches a document's file name with or without its extension; documents are
    ranked by their best chunk."""

    ks = sorted({int(k) for k in k_values if int(k) > 0}) or [1, 5, 10]
    depth = max(50, 10 * max(ks))  # enough chunks that max(k) distinct documents can appear
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    rrs: list[float] = []
    details: list[dict[str, Any]] = []
    parsed: list[tuple[str, set[str]]] = []
    for q in questions:
        text = str(q.get("question") or "").strip()
        gold_raw = q.get("gold") or []
        gold = {g for g in ([gold_raw] if isinstance(gold_raw, str) else gold_raw) if g}
        if not text or not gold:
            raise CorpusError(f"each line needs a non-empty 'question' and 'gold' list: {q!r}")
        parsed.append((text, gold))
    all_hits: list[list[SearchHit]] = []
    for i in range(0, len(parsed), EVAL_BATCH):  # embedded in batches, not one by one
        all_hits += kb_search_many(
            kb=kb,
            queries=[text for text, _ in parsed[i : i + EVAL_BATCH]],
            mode=mode,
            k=depth,
            embedding_version=embedding_version,
        )
    for (text, gold), hits in zip(parsed, all_hits, strict=True):
        ranked_names: list[str] = []
        seen: set[int] = set()
        for hit in hits:
            if hit.document_id not in seen:
                seen.add(hit.document_id)
                ranked_names.append(hit.document_name)
        # Map each ranked document onto the gold label it satisfies (if any).
        ranked = [next((g for g in gold if g in _name_keys(n)), f"\0{n}") for n in ranked_names]
        for k in ks:
            recalls[k].append(recall_at_k(ranked, gold, k))
        rrs.append(mrr(ranked, gold))
        details.append({"question": text, "gold": sorted(gold), "ranked": ranked_names[: max(ks)]})
    result: dict[str, Any] = {"questions": len(details)}
    for k in ks:
        result[f"recall@{k}"] = round(mean(recalls[k]), 4)
    result["mrr"] = round(mean(rrs), 4)
    result["details"] = details
    return result
