"""Ingestion that a dead or stopping worker left half done: stale selection, the claim, resume
without duplicates (exact counts in the database, Chroma and BM25), hand-back on stop, the
stale sweep, and Retry of a stalled document over the API and the page."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from corpus.knowledge import ingestion, services
from corpus.knowledge.indexes import bm25_index, vector_store
from corpus.knowledge.ingestion import (
    document_ingest,
    document_ingest_claim,
    document_ingests_stop,
    documents_ingest,
)
from corpus.knowledge.selectors import documents_stale
from corpus.knowledge.services import document_retry, document_upload, kb_create
from corpus.models import Chunk, Document, KnowledgeBase
from corpus.tasks import document_ingests_waiting, documents_resume_stale
from raftweb.retrieval import collection_name

pytestmark = pytest.mark.django_db

TEXT = b"\n\n".join(
    f"Paragraph {i} explains how setting {i} changes the picture of the television.".encode()
    for i in range(24)
)
ROUND = 5  # chunks per embedding round here, so one document takes several rounds


class Killed(BaseException):
    """What SIGKILL does to a worker mid-ingest: nothing after this line runs, no except."""


@pytest.fixture(autouse=True)
def _small_rounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(ingestion, "ROUND_SIZE", ROUND)
    yield
    ingestion._gate.reopen()  # a test that stopped "the worker" must not stop the next


@pytest.fixture
def kb() -> KnowledgeBase:
    return kb_create(name="TV", slug="tv", chunk_size=20, chunk_overlap=2)


def _upload(kb: KnowledgeBase, name: str = "picture.txt", data: bytes = TEXT) -> Document:
    return document_upload(kb=kb, name=name, chunks=[data], enqueue=False).document


def _age(document: Document, seconds: float) -> None:
    """Make the document's last heartbeat ``seconds`` old."""
    Document.objects.filter(pk=document.pk).update(
        updated_at=timezone.now() - timedelta(seconds=seconds)
    )


STALE = settings.INGEST_STALE_S + 1


def _indexed(kb: KnowledgeBase) -> dict[str, Any]:
    """What each store holds: chunk ids in the database, vectors in Chroma, postings in BM25."""
    db = {str(pk) for pk in Chunk.objects.filter(document__kb=kb).values_list("pk", flat=True)}
    store = vector_store()
    name = collection_name(kb.index_key, "base")
    chroma_count = store.count(name)  # (creates the collection as the app does, if missing)
    chroma = store.client.get_collection(name).get(include=[])["ids"]
    bm25 = bm25_index(kb)
    return {
        "db": db,
        "chroma": sorted(chroma),
        "chroma_count": chroma_count,
        "bm25": sorted(bm25.get(sorted(db))),
        "bm25_count": bm25.count(),
    }


def _assert_exact(kb: KnowledgeBase, expected_chunks: int) -> set[str]:
    found = _indexed(kb)
    ids = sorted(found["db"])
    assert len(ids) == expected_chunks
    assert found["chroma"] == ids and found["chroma_count"] == expected_chunks
    assert found["bm25"] == ids and found["bm25_count"] == expected_chunks
    assert sum(d.chunk_count for d in kb.documents.all()) == expected_chunks
    assert not Chunk.objects.filter(document__kb=kb, embedded=False).exists()
    return set(ids)


def _kill_after_rounds(monkeypatch: pytest.MonkeyPatch, rounds: int) -> None:
    """The worker dies right after its ``rounds``-th embedding round (vectors written, chunks
    marked embedded, no heartbeat yet)."""
    real = ingestion._embed
    calls = {"n": 0}

    def embed(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= rounds:
            raise Killed

    monkeypatch.setattr(ingestion, "_embed", embed)


# --------------------------------------------------------------------------- stale selection
def test_it_tells_stale_documents_from_live_and_waiting_ones(kb: KnowledgeBase) -> None:
    docs = {name: _upload(kb, f"{name}.txt", name.encode() * 20) for name in [
        "live", "dead_parsing", "dead_embedding", "ready", "failed", "lost", "waiting", "fresh"
    ]}  # fmt: skip
    states = {
        "live": (Document.Status.EMBEDDING, 1),
        "dead_parsing": (Document.Status.PARSING, STALE),
        "dead_embedding": (Document.Status.EMBEDDING, STALE),
        "ready": (Document.Status.READY, STALE),
        "failed": (Document.Status.FAILED, STALE),
        "lost": (Document.Status.QUEUED, 60),  # no task waits for it
        "waiting": (Document.Status.QUEUED, 10 * STALE),  # behind a long backlog
        "fresh": (Document.Status.QUEUED, 0),  # just uploaded: its enqueue is on the way
    }
    for name, (status, age) in states.items():
        Document.objects.filter(pk=docs[name].pk).update(status=status)
        _age(docs[name], age)
    waiting = {docs["waiting"].pk}
    stale = documents_stale(waiting=lambda: waiting)
    assert stale == sorted(docs[n].pk for n in ("dead_parsing", "dead_embedding", "lost"))
    # A queue too long to read: queued documents are not judged; stalled ones still are.
    assert documents_stale(waiting=lambda: None) == sorted(
        docs[n].pk for n in ("dead_parsing", "dead_embedding")
    )
    assert documents_stale(ids=[docs["live"].pk, docs["lost"].pk], waiting=set) == [docs["lost"].pk]

    def unreadable() -> set[int]:
        raise AssertionError("the queue is read only when a queued document might be stale")

    assert documents_stale(ids=[docs["dead_parsing"].pk], waiting=unreadable) == [
        docs["dead_parsing"].pk
    ]


def test_it_reads_the_waiting_ingest_tasks_from_the_queue(kb: KnowledgeBase) -> None:
    from huey.contrib.djhuey import HUEY

    from corpus.tasks import document_ingest_task

    assert document_ingests_waiting() == set()
    HUEY.storage.enqueue(HUEY.serialize_task(document_ingest_task.s(1234)))
    try:
        assert document_ingests_waiting() == {1234}
        assert document_ingests_waiting(limit=0) is None  # too long to read: cannot tell
    finally:
        HUEY.storage.flush_queue()


# --------------------------------------------------------------------------- claim
def test_it_lets_exactly_one_worker_claim_a_document(kb: KnowledgeBase) -> None:
    doc = _upload(kb)
    first = document_ingest_claim(document_id=doc.pk)
    assert first is not None
    assert document_ingest_claim(document_id=doc.pk) is None  # live: the second backs off
    doc.refresh_from_db()
    assert doc.status == Document.Status.PARSING and doc.updated_at == first
    # A second worker asked to ingest it meanwhile does nothing at all.
    assert document_ingest(document_id=doc.pk).status == Document.Status.PARSING
    assert not Chunk.objects.filter(document=doc).exists()
    _age(doc, STALE)  # the first worker died
    assert document_ingest_claim(document_id=doc.pk) is not None
    Document.objects.filter(pk=doc.pk).update(status=Document.Status.READY)
    assert document_ingest_claim(document_id=doc.pk) is None
    assert document_ingest_claim(document_id=doc.pk, force=True) is not None


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("rounds", [1, 3])
def test_it_resumes_a_document_killed_mid_embedding_without_duplicates(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch, rounds: int
) -> None:
    doc = _upload(kb)
    _kill_after_rounds(monkeypatch, rounds)
    with pytest.raises(Killed):
        document_ingest(document_id=doc.pk)
    monkeypatch.undo()
    monkeypatch.setattr(ingestion, "ROUND_SIZE", ROUND)
    doc.refresh_from_db()
    # What the finding saw: stuck "embedding", half in Chroma, missing from BM25.
    ids = set(Chunk.objects.filter(document=doc).values_list("pk", flat=True))
    total = len(ids)
    assert total > 4 * ROUND  # several rounds, so the kill lands in the middle
    assert doc.status == Document.Status.EMBEDDING and doc.chunk_count == total
    if rounds > 1:  # each finished round wrote its progress with the heartbeat
        assert doc.progress == 5 + int(90 * (rounds - 1) * ROUND / total)
    embedded = Chunk.objects.filter(document=doc, embedded=True).count()
    assert embedded == rounds * ROUND
    found = _indexed(kb)
    assert found["chroma_count"] == embedded and found["bm25_count"] == 0
    # Fresh heartbeat: that could be a live worker, so nothing touches it yet.
    assert documents_stale(waiting=set) == []
    with pytest.raises(services.CorpusError) as refused:
        document_retry(document=doc)
    assert refused.value.status == 409 and "ingesting this document" in refused.value.message

    _age(doc, STALE)
    assert documents_stale(waiting=set) == [doc.pk]
    documents_resume_stale.call_local()  # the periodic sweep (jobs run in-process in tests)
    doc.refresh_from_db()
    assert doc.status == Document.Status.READY and doc.progress == 100 and doc.error == ""
    # The chunk rows were reused (not recreated), and every store holds each exactly once.
    assert set(Chunk.objects.filter(document=doc).values_list("pk", flat=True)) == ids
    assert _assert_exact(kb, total) == {str(i) for i in ids}
    assert documents_stale(waiting=set) == []


def test_it_resumes_every_stage_a_worker_can_die_in(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed: while parsing (no chunks), after writing chunks (none embedded), between a
    vector upsert and marking its chunks embedded, after the last round (nothing in BM25),
    after BM25 but before 'ready'. Each resumes to the same exact counts."""
    names = ["parsing", "chunked", "upserted", "embedded", "postings"]
    docs = {n: _upload(kb, f"{n}.txt", TEXT + f"\n\n{n} is the last word.".encode()) for n in names}

    # parsing: claimed, then the worker died.
    assert document_ingest_claim(document_id=docs["parsing"].pk) is not None

    # chunked: chunks written, then died before the first round.
    monkeypatch.setattr(ingestion, "_embed", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        document_ingest(document_id=docs["chunked"].pk)
    monkeypatch.undo()
    monkeypatch.setattr(ingestion, "ROUND_SIZE", ROUND)
    chunked = set(Chunk.objects.filter(document=docs["chunked"]).values_list("pk", flat=True))
    assert chunked and not Chunk.objects.filter(document=docs["chunked"], embedded=True).exists()

    # upserted: the second round's vectors are in Chroma but its chunks are not marked embedded.
    real_store = ingestion.vector_store()
    upserts = {"n": 0}

    class DiesAfterUpsert:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_store, name)

        def upsert(self, *args: Any, **kwargs: Any) -> None:
            real_store.upsert(*args, **kwargs)
            upserts["n"] += 1
            if upserts["n"] == 2:
                raise Killed

    monkeypatch.setattr(ingestion, "vector_store", DiesAfterUpsert)
    with pytest.raises(Killed):
        document_ingest(document_id=docs["upserted"].pk)
    monkeypatch.undo()
    monkeypatch.setattr(ingestion, "ROUND_SIZE", ROUND)
    assert Chunk.objects.filter(document=docs["upserted"], embedded=True).count() == ROUND

    # embedded: every round done, died before BM25.
    monkeypatch.setattr(ingestion, "_finish", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        document_ingest(document_id=docs["embedded"].pk)
    monkeypatch.undo()
    monkeypatch.setattr(ingestion, "ROUND_SIZE", ROUND)
    assert not Chunk.objects.filter(document=docs["embedded"], embedded=False).exists()

    # postings: in BM25 already, died before the status update.
    real_finish_many = ingestion._finish_many

    def finish_then_die(kb_: KnowledgeBase, done: Any) -> None:
        records = []
        for document, chunks in done:
            records.extend(ingestion._chunk_records(document, chunks))
        bm25_index(kb_).add(records)
        raise Killed

    monkeypatch.setattr(ingestion, "_finish_many", finish_then_die)
    with pytest.raises(Killed):
        document_ingest(document_id=docs["postings"].pk)
    monkeypatch.setattr(ingestion, "_finish_many", real_finish_many)

    assert set(kb.documents.values_list("status", flat=True)) <= {
        Document.Status.PARSING,
        Document.Status.EMBEDDING,
    }
    for doc in docs.values():
        _age(doc, STALE)
    assert documents_stale(waiting=set) == sorted(d.pk for d in docs.values())
    documents_resume_stale.call_local()
    statuses = dict(kb.documents.values_list("name", "status"))
    assert statuses == {f"{n}.txt": Document.Status.READY for n in names}
    per_doc = {d.name: d.chunk_count for d in kb.documents.all()}
    assert all(count > 4 * ROUND for count in per_doc.values()), per_doc
    # Chunk rows written before the kill are reused, not written again.
    assert set(Chunk.objects.filter(document=docs["chunked"]).values_list("pk", flat=True)) == (
        chunked
    )
    _assert_exact(kb, sum(per_doc.values()))


def test_it_stops_when_another_worker_takes_the_document_over(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker judged dead that was only slow: at its next round it sees the heartbeat is no
    longer its own and stops writing (no 'failed', no second set of rounds)."""
    doc = _upload(kb)
    real = ingestion._embed

    def embed(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        # Meanwhile the document went stale and another worker claimed it.
        _age(doc, STALE)
        assert document_ingest_claim(document_id=doc.pk) is not None

    monkeypatch.setattr(ingestion, "_embed", embed)
    result = document_ingest(document_id=doc.pk)
    assert result.status == Document.Status.PARSING  # the other worker's claim, untouched
    assert Chunk.objects.filter(document=doc, embedded=True).count() == ROUND  # one round only


# --------------------------------------------------------------------------- stop (SIGTERM)
def test_it_hands_a_document_back_when_the_worker_stops(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _upload(kb)
    real = ingestion._embed
    rounds = {"n": 0}

    def embed(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        rounds["n"] += 1
        if rounds["n"] == 2:
            # SIGTERM arrives during the second round; the round still finishes.
            assert document_ingests_stop(timeout=0) is False  # this ingestion is running
            assert ingestion._gate.stopping

    monkeypatch.setattr(ingestion, "_embed", embed)
    result = document_ingest(document_id=doc.pk)
    assert rounds["n"] == 2
    assert document_ingests_stop(timeout=0) is True  # nothing left running
    # Handed back: queued with no task, two rounds kept, nothing searchable half-done.
    assert result.status == Document.Status.QUEUED and result.error == ""
    total = result.chunk_count
    assert total > 2 * ROUND
    assert Chunk.objects.filter(document=doc, embedded=True).count() == 2 * ROUND
    assert bm25_index(kb).count() == 0
    # A stopping worker takes nothing new.
    other = _upload(kb, "other.txt", b"Another manual about the remote control.")
    assert document_ingest(document_id=other.pk).status == Document.Status.QUEUED
    ingestion._gate.reopen()

    # Resumable within the queued grace of its last heartbeat: stale sweep, or Retry.
    _age(doc, 11)
    _age(other, 11)
    assert documents_stale(waiting=set) == sorted([doc.pk, other.pk])
    monkeypatch.setattr(ingestion, "_embed", real)
    documents_resume_stale.call_local()
    assert set(kb.documents.values_list("status", flat=True)) == {Document.Status.READY}
    ready = Document.objects.get(pk=doc.pk)
    assert ready.chunk_count == total
    _assert_exact(kb, total + Document.objects.get(pk=other.pk).chunk_count)


@pytest.mark.django_db(transaction=True)
def test_it_hands_the_document_back_when_run_huey_gets_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The consumer's SIGNAL_INTERRUPTED hook (what ``run_huey`` calls on SIGTERM before it
    exits) makes a running ingestion finish its round and hand the document back, and waits
    for that, briefly."""
    from huey.signals import SIGNAL_INTERRUPTED

    from corpus import tasks

    kb = kb_create(name="TV", slug="tv", chunk_size=20, chunk_overlap=2)
    doc = _upload(kb)
    in_round, round_may_end = threading.Event(), threading.Event()
    real = ingestion._embed

    def slow_round(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        in_round.set()
        round_may_end.wait(10)

    monkeypatch.setattr(ingestion, "_embed", slow_round)

    def worker_thread() -> None:
        try:
            document_ingest(document_id=doc.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=worker_thread)
    thread.start()
    try:
        assert in_round.wait(60)
        threading.Timer(0.5, round_may_end.set).start()  # the round ends a moment later
        start = time.monotonic()
        tasks._worker_stopping(SIGNAL_INTERRUPTED, tasks.document_ingest_task.s(doc.pk))
        waited = time.monotonic() - start
    finally:
        round_may_end.set()
        thread.join(30)
    assert 0.4 < waited < ingestion.SHUTDOWN_GRACE_S  # it waited for the hand-back, no longer
    doc.refresh_from_db()
    assert doc.status == Document.Status.QUEUED  # handed back: resumable
    assert Chunk.objects.filter(document=doc, embedded=True).count() == ROUND  # round finished
    assert bm25_index(kb).count() == 0


def test_it_claims_bulk_documents_and_skips_those_a_worker_holds(kb: KnowledgeBase) -> None:
    held = _upload(kb, "held.txt", b"A worker is parsing this one right now.")
    free = _upload(kb, "free.txt", b"Nobody holds this one.")
    assert document_ingest_claim(document_id=held.pk) is not None
    by_id = {d.pk: d for d in documents_ingest(document_ids=[held.pk, free.pk])}
    assert by_id[free.pk].status == Document.Status.READY
    assert by_id[held.pk].status == Document.Status.PARSING
    assert not Chunk.objects.filter(document=held).exists()


# --------------------------------------------------------------------------- Retry
def _stalled(kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> Document:
    doc = _upload(kb)
    _kill_after_rounds(monkeypatch, 1)
    with pytest.raises(Killed):
        document_ingest(document_id=doc.pk)
    monkeypatch.undo()
    monkeypatch.setattr(ingestion, "ROUND_SIZE", ROUND)
    return doc


def test_it_retries_a_stalled_document_over_the_api(
    kb: KnowledgeBase,
    monkeypatch: pytest.MonkeyPatch,
    alice: Any,
    api_token_for: Callable[[Any], str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    doc = _stalled(kb, monkeypatch)
    total = Document.objects.get(pk=doc.pk).chunk_count
    c = Client(HTTP_AUTHORIZATION=f"Bearer {api_token_for(alice)}")
    url = f"/api/kbs/{kb.slug}/documents/{doc.pk}/retry"

    assert c.get(f"/api/kbs/{kb.slug}/documents/{doc.pk}").json()["stalled"] is False
    r = c.post(url)  # its worker might be alive: refused, with the reason
    assert r.status_code == 409, r.content
    error = r.json()["error"]
    assert error["code"] == "conflict" and "ingesting this document" in error["message"]
    assert f"{settings.INGEST_STALE_S} s" in error["message"]
    assert Document.objects.get(pk=doc.pk).status == Document.Status.EMBEDDING

    _age(doc, STALE)
    r = c.get(f"/api/kbs/{kb.slug}/documents/{doc.pk}")
    assert r.json()["status"] == "embedding" and r.json()["stalled"] is True
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = c.post(url)
    assert r.status_code == 202, r.content
    assert r.json()["status"] == "queued" and r.json()["progress"] == 0
    assert len(callbacks) == 1  # one ingest task enqueued
    # Retried twice before the worker takes it: the second is refused, nothing enqueued again.
    with django_capture_on_commit_callbacks(execute=False) as again:
        r = c.post(url)
    assert r.status_code == 409 and "waiting for a worker" in r.json()["error"]["message"]
    assert again == []
    callbacks[0]()  # the worker (in-process here) runs the task
    r = c.get(f"/api/kbs/{kb.slug}/documents/{doc.pk}")
    assert r.json()["status"] == "ready" and r.json()["chunk_count"] == total
    _assert_exact(kb, total)

    r = c.post(url)
    assert r.status_code == 400 and "ready" in r.json()["error"]["message"]


def test_it_retries_a_queued_document_only_when_its_task_is_lost(
    kb: KnowledgeBase,
    monkeypatch: pytest.MonkeyPatch,
    alice: Any,
    api_token_for: Callable[[Any], str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    doc = _upload(kb)
    _age(doc, 60)
    c = Client(HTTP_AUTHORIZATION=f"Bearer {api_token_for(alice)}")
    url = f"/api/kbs/{kb.slug}/documents/{doc.pk}/retry"
    monkeypatch.setattr(services, "document_ingests_waiting", lambda: {doc.pk})
    r = c.post(url)
    assert r.status_code == 409 and "waiting for a worker" in r.json()["error"]["message"]
    monkeypatch.setattr(services, "document_ingests_waiting", set)
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post(url)
    assert r.status_code == 202, r.content
    assert Document.objects.get(pk=doc.pk).status == Document.Status.READY


def test_it_offers_retry_for_a_stalled_document_on_the_page(
    kb: KnowledgeBase,
    monkeypatch: pytest.MonkeyPatch,
    client_for: Callable[[Any], Client],
    alice: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    doc = _stalled(kb, monkeypatch)
    c = client_for(alice)
    retry = reverse("corpus:document_retry", args=[kb.slug, doc.pk])
    page = c.get(reverse("corpus:kb_detail", args=[kb.slug]), HTTP_HX_REQUEST="true")
    assert retry.encode() not in page.content  # live as far as anyone can tell
    _age(doc, STALE)
    page = c.get(reverse("corpus:kb_detail", args=[kb.slug]), HTTP_HX_REQUEST="true")
    assert retry.encode() in page.content and b"no progress lately" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post(retry, HTTP_HX_REQUEST="true")
    assert r.status_code == 200
    assert Document.objects.get(pk=doc.pk).status == Document.Status.READY
    assert retry.encode() not in r.content
