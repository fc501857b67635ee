"""Upload → ingest → search → delete through the corpus services (real parser, model, Chroma)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from corpus.knowledge.indexes import CorpusError, bm25_index, document_delete, vector_store
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.search import kb_search
from corpus.knowledge.services import (
    document_upload,
    kb_create,
    kb_delete,
    kb_reindex,
    kb_update,
)
from corpus.models import Chunk, Document, KnowledgeBase
from raftweb.retrieval import collection_name

pytestmark = pytest.mark.django_db

BATTERY = (
    b"Battery\n\nCharge the battery with the USB-C cable. Fast charging needs the 25 W adapter.\n"
)
GPS = b"Location\n\nTurn on location services so apps can use GPS, Wi-Fi and mobile networks.\n"


def _upload(kb: KnowledgeBase, name: str, data: bytes) -> Document:
    result = document_upload(kb=kb, name=name, chunks=[data], enqueue=False)
    return document_ingest(document_id=result.document.pk)


def test_it_ingests_a_document_into_chunks_vectors_and_bm25(alice: object) -> None:
    kb = kb_create(name="Phone manual", user=alice)
    doc = _upload(kb, "battery.txt", BATTERY)
    assert doc.status == Document.Status.READY and doc.progress == 100 and doc.error == ""
    assert doc.kind == "text" and doc.chunk_count == 1 and doc.size == len(BATTERY)
    chunk = Chunk.objects.get(document=doc)
    assert chunk.embedded and chunk.text.startswith("Battery")
    assert vector_store().count(collection_name(kb.index_key, "base")) == 1
    assert bm25_index(kb).count() == 1
    hits = kb_search(kb=kb, query="fast charging adapter", k=3)
    assert hits[0].chunk_id == str(chunk.pk) and hits[0].document_name == "battery.txt"


def test_it_recognises_identical_reuploads_and_versions_changed_files() -> None:
    kb = kb_create(name="KB")
    first = _upload(kb, "manual.txt", BATTERY)
    again = document_upload(kb=kb, name="copy-of-manual.txt", chunks=[BATTERY], enqueue=False)
    assert not again.created and again.document.pk == first.pk
    changed = document_upload(
        kb=kb,
        name="manual.txt",
        chunks=[BATTERY + b"\nNew paragraph about wireless.\n"],
        enqueue=False,
    )
    assert changed.created and changed.replaced is not None and changed.replaced.pk == first.pk
    assert changed.document.version == 2
    # Until the new version is ready, the old one stays searchable.
    assert kb_search(kb=kb, query="fast charging", k=3)[0].document_id == first.pk
    document_ingest(document_id=changed.document.pk)
    assert list(kb.documents.values_list("version", flat=True)) == [2]
    hits = kb_search(kb=kb, query="wireless", k=5)
    assert {h.document_id for h in hits} == {changed.document.pk}
    assert bm25_index(kb).count(first.pk) == 0


def test_it_is_idempotent_and_resumes_after_a_partial_embedding() -> None:
    kb = kb_create(name="KB", chunk_size=20, chunk_overlap=2)
    text = b"\n\n".join(
        f"Paragraph {i} explains topic number {i} in a few words.".encode() for i in range(30)
    )
    doc = _upload(kb, "long.txt", text)
    ids = set(Chunk.objects.filter(document=doc).values_list("pk", flat=True))
    assert len(ids) > 5
    document_ingest(document_id=doc.pk)  # ready: nothing happens
    assert set(Chunk.objects.filter(document=doc).values_list("pk", flat=True)) == ids
    # Simulate a worker killed mid-way: half the chunks not embedded, document still "embedding",
    # its last heartbeat older than the stale time (a fresh one would mean a live worker).
    half = sorted(ids)[: len(ids) // 2]
    Chunk.objects.filter(pk__in=half).update(embedded=False)
    Document.objects.filter(pk=doc.pk).update(
        status=Document.Status.EMBEDDING,
        updated_at=timezone.now() - timedelta(seconds=settings.INGEST_STALE_S + 1),
    )
    doc = document_ingest(document_id=doc.pk)
    assert doc.status == Document.Status.READY
    assert (
        set(Chunk.objects.filter(document=doc).values_list("pk", flat=True)) == ids
    )  # reused, not recreated
    assert vector_store().count(collection_name(kb.index_key, "base")) == len(ids)


def test_it_deletes_a_document_with_its_chunks_vectors_and_postings() -> None:
    kb = kb_create(name="KB")
    battery = _upload(kb, "battery.txt", BATTERY)
    gps = _upload(kb, "gps.txt", GPS)
    path = Path(settings.MEDIA_ROOT) / battery.file_path
    assert path.exists()
    battery_id = battery.pk
    document_delete(document=battery)
    assert not Chunk.objects.filter(document_id=battery_id).exists()
    assert vector_store().count(collection_name(kb.index_key, "base")) == 1
    assert bm25_index(kb).count(battery_id) == 0
    assert not path.exists()
    assert {h.document_id for h in kb_search(kb=kb, query="battery charging", k=5)} == {gps.pk}


def test_it_reindexes_with_new_chunk_settings() -> None:
    kb = kb_create(name="KB")
    text = b"\n\n".join(
        f"Paragraph {i} explains topic number {i} in a few words.".encode() for i in range(15)
    )
    doc = _upload(kb, "long.txt", text)
    assert doc.chunk_count == 1
    kb_update(kb=kb, chunk_size=40, chunk_overlap=4)
    assert kb_reindex(kb=kb, enqueue=False) == 1
    doc.refresh_from_db()
    assert doc.status == Document.Status.READY and doc.chunk_count > 3
    assert vector_store().count(collection_name(kb.index_key, "base")) == doc.chunk_count
    assert bm25_index(kb).count() == doc.chunk_count


def test_it_filters_search_by_document_and_mode() -> None:
    kb = kb_create(name="KB")
    battery = _upload(kb, "battery.txt", BATTERY)
    gps = _upload(kb, "gps.txt", GPS)
    for mode in ("hybrid", "dense", "bm25"):
        hits = kb_search(kb=kb, query="turn on GPS", mode=mode, k=2)
        assert hits[0].document_id == gps.pk
        only = kb_search(kb=kb, query="turn on GPS", mode=mode, k=2, document_ids=[battery.pk])
        assert {h.document_id for h in only} <= {battery.pk}
    with pytest.raises(CorpusError, match="unknown search mode"):
        kb_search(kb=kb, query="x", mode="magic")


def test_it_deletes_a_knowledge_base_and_its_indexes() -> None:
    kb = kb_create(name="KB")
    _upload(kb, "battery.txt", BATTERY)
    path = bm25_index(kb).path
    kb_delete(kb=kb)
    assert not KnowledgeBase.objects.filter(pk=kb.pk).exists()
    assert not path.exists()
    assert not Chunk.objects.exists()


def test_it_validates_knowledge_base_settings() -> None:
    kb_create(name="Manual", slug="manual")
    with pytest.raises(CorpusError, match="already exists"):
        kb_create(name="Other", slug="manual")
    with pytest.raises(CorpusError, match="chunk size"):
        kb_create(name="Tiny", chunk_size=4)
    with pytest.raises(CorpusError, match="overlap"):
        kb_create(name="Weird", chunk_size=100, chunk_overlap=90)
    assert kb_create(name="Manual").slug == "manual-2"


def test_it_checks_a_custom_embedding_model_at_creation(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="knowledge base's embedding model"):
        kb_create(name="Broken", embedding_model=str(tmp_path / "missing-model"))
    kb = kb_create(name="Explicit", embedding_model="all-MiniLM-L6-v2")
    doc = _upload(kb, "battery.txt", BATTERY)
    assert doc.status == Document.Status.READY


def test_it_returns_nothing_for_an_empty_kb() -> None:
    kb = kb_create(name="Empty")
    for mode in ("hybrid", "dense", "bm25"):
        assert kb_search(kb=kb, query="anything at all", mode=mode, k=5) == []
    assert kb_search(kb=kb, query="x", mode="dense", k=5, document_ids=[1, 2]) == []


def test_it_stores_the_parsed_text_that_chunk_offsets_index_into() -> None:
    from tests.corpus.corpus_files import pdf_bytes

    kb = kb_create(name="KB", chunk_size=16, chunk_overlap=2)
    pages = [
        "First page talks about the battery. It charges quickly. Use the adapter every day. " * 2,
        "Second page explains location services. GPS is accurate in cities. Wi-Fi helps too. " * 2,
    ]
    doc = _upload(kb, "manual.pdf", pdf_bytes(pages))
    doc.refresh_from_db()
    assert doc.status == Document.Status.READY and doc.pages == 2
    chunks = list(Chunk.objects.filter(document=doc).order_by("ordinal"))
    assert len(chunks) >= 4 and {c.page for c in chunks} == {1, 2}
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text
