"""The Retriever over real indexes with the real (bundled) embedding model."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftweb.ingest import chunk_document, parse_bytes
from raftweb.retrieval import (
    BM25Index,
    EmbeddingModelNotFound,
    IndexedChunk,
    RetrievalError,
    Retriever,
    collection_name,
    load_embedder,
    open_vector_store,
    rank_documents,
)

DOCS = {
    1: (
        "battery.txt",
        "Battery\nCharge the battery with the supplied USB-C cable. Fast charging needs the 25 W adapter.",
    ),
    2: (
        "gps.txt",
        "Location\nTurn on location services so apps can use GPS, Wi-Fi and mobile networks to find you.",
    ),
    3: ("camera.txt", "Camera\nRecord HDR10+ video and use the ultra wide lens for landscapes."),
    4: (
        "screen.txt",
        "Display\nUse night mode to reduce eye strain. The blue light filter warms the screen colours.",
    ),
}


@pytest.fixture
def retriever(tmp_path: Path) -> Retriever:
    embedder = load_embedder()
    store = open_vector_store("", tmp_path / "chroma")
    coll = collection_name(1, "base")
    bm25 = BM25Index(tmp_path / "bm25.sqlite3")
    for doc_id, (name, text) in DOCS.items():
        doc = parse_bytes(text.encode(), name)
        chunks = chunk_document(doc, size=300, overlap=30, token_offsets=embedder.token_offsets)
        ids = [f"{doc_id}:{c.ordinal}" for c in chunks]
        store.upsert(
            coll,
            ids,
            embedder.encode([c.index_text for c in chunks]),
            [{"document_id": doc_id} for _ in chunks],
        )
        bm25.add(
            [
                IndexedChunk(
                    chunk_id=i,
                    document_id=doc_id,
                    document_name=name,
                    text=c.text,
                    page=c.page,
                    start=c.start,
                    end=c.end,
                    index_text=c.index_text,
                )
                for i, c in zip(ids, chunks, strict=False)
            ]
        )
    return Retriever(store=store, collection=coll, bm25=bm25, embedder=embedder)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_it_finds_the_right_document_in_every_mode(retriever: Retriever, mode: str) -> None:
    hits = retriever.search("how do I turn on GPS location", mode=mode, k=3)
    assert hits[0].document_id == 2
    assert hits[0].document_name == "gps.txt"
    assert "GPS" in hits[0].text
    assert hits[0].end > hits[0].start


def test_it_understands_paraphrases_densely(retriever: Retriever) -> None:
    hits = retriever.search("my eyes hurt when reading at night", mode="dense", k=1)
    assert hits[0].document_id == 4


def test_it_fuses_and_reports_both_ranks(retriever: Retriever) -> None:
    hits = retriever.search("fast charging adapter for the battery", mode="hybrid", k=4)
    assert hits[0].document_id == 1
    assert hits[0].dense_rank == 1 and hits[0].bm25_rank == 1
    assert hits[0].score == pytest.approx(2 / 61)
    assert rank_documents(hits)[0] == 1


def test_it_filters_by_document(retriever: Retriever) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.search("battery charging", mode=mode, k=5, document_ids=[3, 4])
        assert {h.document_id for h in hits} <= {3, 4}


def test_it_rejects_an_unknown_mode_and_empty_queries(retriever: Retriever) -> None:
    with pytest.raises(RetrievalError, match="unknown search mode"):
        retriever.search("x", mode="fuzzy")
    assert retriever.search("   ", k=3) == []


def test_it_names_the_setting_when_the_model_is_missing(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelNotFound, match="RAFTWEB_EMBEDDING_MODEL"):
        load_embedder(str(tmp_path / "no-such-model"))


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_it_searches_many_queries_at_once_like_one_by_one(retriever: Retriever, mode: str) -> None:
    queries = [
        "how do I turn on GPS location",
        "",
        "fast charging adapter for the battery",
        "my eyes hurt when reading at night",
    ]
    calls: list[int] = []
    query_many = retriever.store.query_many

    def counting(collection, vectors, k, document_ids=None):  # type: ignore[no-untyped-def]
        calls.append(len(vectors))
        return query_many(collection, vectors, k, document_ids)

    retriever.store.query_many = counting  # type: ignore[method-assign]
    try:
        together = retriever.search_many(queries, mode=mode, k=3)
    finally:
        del retriever.store.query_many  # back to the class's method
    alone = [retriever.search(q, mode=mode, k=3) for q in queries]
    assert [[h.chunk_id for h in hits] for hits in together] == [
        [h.chunk_id for h in hits] for hits in alone
    ]
    assert together[1] == [] and together[0][0].document_id == 2
    # One vector-store call for the three non-empty queries (none for BM25).
    assert calls == ([] if mode == "bm25" else [3])


def test_it_searches_like_an_indexed_chunk_from_its_stored_vector(retriever: Retriever) -> None:
    """Generation's hard negatives: the chunk's stored vector is the query, no model run."""
    texts = {1: DOCS[1][1], 3: DOCS[3][1]}

    def no_model(texts: object) -> object:
        raise AssertionError("the model ran for a chunk whose vector is stored")

    retriever.embedder.encode_queries = no_model  # type: ignore[method-assign]
    try:
        hits = retriever.search_many(
            list(texts.values()), mode="dense", k=2, like_ids=["1:0", "3:0"]
        )
    finally:
        del retriever.embedder.encode_queries
    assert [h[0].chunk_id for h in hits] == ["1:0", "3:0"]  # each chunk is its own nearest
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-3)
    # An id with no stored vector falls back to embedding the text.
    [fallback] = retriever.search_many([texts[1]], mode="dense", k=1, like_ids=["no-such-id"])
    assert fallback[0].document_id == 1
