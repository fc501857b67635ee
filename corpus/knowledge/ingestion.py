"""Worker-side ingestion: parse, chunk, embed and index documents, in rounds.

It never enqueues (the Huey tasks in :mod:`corpus.tasks` call it); a document is idempotent per
round, so a killed worker resumes without duplicates.

A worker *claims* a document before it touches it, with one conditional update that must change
exactly one row (:func:`document_ingest_claim`), so two workers - say the original and a
stale-document resume - never ingest it at once. ``Document.updated_at`` is the heartbeat: the
claim, the end of parsing and every embedding round write it, so a document parsing or
embedding without a heartbeat for ``RAFTWEB_INGEST_STALE_SECONDS`` has lost its worker and may
be claimed again (:func:`corpus.knowledge.selectors.documents_stale`). Each heartbeat is a
compare-and-set on the previous one: a worker that finds the document taken over (or retried,
re-indexed, deleted) stops writing at its next round. A worker told to stop (SIGTERM to
``run_huey``, see :func:`document_ingests_stop`) hands its document back between two rounds:
embedded chunks kept, the document queued again with no task, which any worker's stale sweep
resumes and Retry accepts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from corpus.knowledge.indexes import (
    bm25_index,
    document_delete,
    kb_embedder,
    upload_root,
    vector_store,
)
from corpus.knowledge.selectors import (
    ACTIVE_STATES,
    ingest_queued_grace,
    ingest_stale_after,
    live_ingestion,
)
from corpus.models import BASE_VERSION, Chunk, Document, EmbeddingIndex, KnowledgeBase
from raftweb.ingest import ParseError, chunk_document, parse_guarded
from raftweb.retrieval import (
    Embedder,
    EmbeddingModelNotFound,
    IndexedChunk,
    VectorStoreError,
    collection_name,
)
from raftweb.shutdown import StopGate

log = logging.getLogger(__name__)


# Small batches pad less: on CPU, all-MiniLM-L6-v2 encodes E-Manual chunks ~20% faster at 16
# than at 64 (sentence-transformers sorts by length, but pads within each batch).
EMBED_BATCH = 16


# Chunks per embedding round of one document: one upsert and one progress update each.
ROUND_SIZE = 128

# How long a stopping worker waits for its ingestions to hand their documents back (`serve`
# sends SIGKILL 10 s after SIGTERM, and generation runs get their own 5 s after this).
SHUTDOWN_GRACE_S = 3.0

# Set when this worker process is shutting down (SIGTERM to `run_huey`; see corpus.tasks): each
# ingestion finishes the round it is in, then hands its document back instead of being killed
# holding it; ingestions that have not claimed their document yet leave it alone.
_gate = StopGate()


def document_ingests_stop(*, timeout: float = SHUTDOWN_GRACE_S) -> bool:
    """Ask every ingestion in this process to hand its document back and wait, at most
    ``timeout`` seconds, until they have. True if none is left running."""
    return _gate.stop(timeout=timeout)


# --------------------------------------------------------------------------- claim, heartbeat
def document_ingest_claim(*, document_id: int, force: bool = False) -> datetime | None:
    """Take a document for this worker with one conditional update that must change one row.

    Claimable: anything no live worker holds (queued, failed, or parsing/embedding with a stale
    heartbeat), and a ready document only when ``force``. Returns the claim's heartbeat (the
    ``updated_at`` it wrote), or None when another worker holds the document (or it is ready)."""
    now = timezone.now()
    claimable = ~live_ingestion()
    if not force:
        claimable &= ~Q(status=Document.Status.READY)
    claimed = (
        Document.objects.filter(pk=document_id)
        .filter(claimable)
        .update(status=Document.Status.PARSING, progress=2, error="", updated_at=now)
    )
    return now if claimed == 1 else None


def document_requeue(*, document_id: int) -> bool:
    """Put a failed or stale document back in the queue (the caller enqueues its task), with one
    conditional update, so a document that a worker has claimed meanwhile is left alone.

    Stale here: parsing/embedding without a heartbeat for the stale time, or queued for longer
    than the grace (the caller checked that no task waits for it)."""
    now = timezone.now()
    requeueable = (
        Q(status=Document.Status.FAILED)
        | Q(status__in=ACTIVE_STATES, updated_at__lt=now - ingest_stale_after())
        | Q(status=Document.Status.QUEUED, updated_at__lt=now - ingest_queued_grace())
    )
    return (
        Document.objects.filter(pk=document_id)
        .filter(requeueable)
        .update(status=Document.Status.QUEUED, progress=0, error="", updated_at=now)
        == 1
    )


def _beat(document: Document, stamp: datetime, **fields: Any) -> datetime | None:
    """Write the heartbeat (and ``fields``) if the document is still ours: its ``updated_at`` is
    still the one we wrote last. None when someone else wrote since (took it over, retried,
    re-indexed or deleted it)."""
    now = timezone.now()
    written = Document.objects.filter(
        pk=document.pk, status__in=ACTIVE_STATES, updated_at=stamp
    ).update(updated_at=now, **fields)
    if not written:
        return None
    document.updated_at = now
    return now


# --------------------------------------------------------------------------- ingestion
def _set_status(
    document: Document, status: str, *, progress: int | None = None, error: str = ""
) -> None:
    document.status = status
    document.error = error
    fields = ["status", "error", "updated_at"]
    if progress is not None:
        document.progress = progress
        fields.append("progress")
    document.save(update_fields=fields)


def _chunk_records(document: Document, chunks: Sequence[Chunk]) -> list[IndexedChunk]:
    return [
        IndexedChunk(
            chunk_id=str(c.pk),
            document_id=document.pk,
            document_name=document.name,
            text=c.text,
            page=c.page,
            start=c.start,
            end=c.end,
            index_text=c.index_text,
        )
        for c in chunks
    ]


def _metadata(document: Document, chunk: Chunk) -> dict[str, Any]:
    meta: dict[str, Any] = {"document_id": document.pk, "ordinal": chunk.ordinal}
    if chunk.page is not None:
        meta["page"] = chunk.page
    return meta


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, VectorStoreError):
        return f"{exc} — retry when the vector store is back"
    if isinstance(exc, (ParseError, EmbeddingModelNotFound)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "the uploaded file is missing from storage; upload it again"
    log.error("ingest failed", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def _prepare_many(
    kb: KnowledgeBase,
    documents: Sequence[Document],
    *,
    force: bool,
    embedder: Embedder,
) -> tuple[list[tuple[Document, list[Chunk]]], list[tuple[Document, BaseException]]]:
    """Parse and chunk several documents of one KB; (re)create Chunk rows only where the text
    changed (resumability). Database work is done per group, not per document, so hundreds
    of small files cost a handful of queries. Returns (prepared, failed)."""
    parsed: list[tuple[Document, Any, list[Any]]] = []
    failed: list[tuple[Document, BaseException]] = []
    for document in documents:
        try:
            data = (upload_root() / document.file_path).read_bytes()
            # Bounded: archive bombs, page/character caps, a time and memory limit per
            # document, in a child process that a stopping worker takes down with it.
            doc = parse_guarded(data, document.name)
            pieces = chunk_document(
                doc,
                size=kb.chunk_size,
                overlap=kb.chunk_overlap,
                token_offsets=embedder.token_offsets,
                # Never more than the embedder reads: a longer chunk's tail would be missing
                # from the dense index (all-MiniLM-L6-v2 truncates at 256 word pieces).
                max_tokens=embedder.max_input_tokens,
            )
            if not pieces:
                raise ParseError("no text to index")
            parsed.append((document, doc, pieces))
        except Exception as exc:
            failed.append((document, exc))
    if not parsed:
        return [], failed
    existing: dict[int, list[Chunk]] = {}
    for chunk in Chunk.objects.filter(document_id__in=[d.pk for d, _, _ in parsed]).order_by(
        "document_id", "ordinal"
    ):
        existing.setdefault(chunk.document_id, []).append(chunk)
    keep = {
        d.pk
        for d, _, pieces in parsed
        if not force and [c.hash for c in existing.get(d.pk, [])] == [p.hash for p in pieces]
    }
    recreate = [(d, pieces) for d, _, pieces in parsed if d.pk not in keep]
    stale = [d.pk for d, _ in recreate if d.pk in existing or force]
    if stale:
        # Different text (or forced): the old chunks' vectors and postings go first.
        bm25 = bm25_index(kb)
        store = vector_store()
        for pk in stale:
            bm25.remove_document(pk)
            store.delete_document(collection_name(kb.index_key, BASE_VERSION), pk)
    created: dict[int, list[Chunk]] = {}
    if recreate:
        rows = [
            Chunk(
                document=d,
                ordinal=p.ordinal,
                text=p.text,
                title=p.title[:300],
                page=p.page,
                start=p.start,
                end=p.end,
                hash=p.hash,
                token_count=p.token_count,
            )
            for d, pieces in recreate
            for p in pieces
        ]
        with transaction.atomic():
            if stale:
                Chunk.objects.filter(document_id__in=stale).delete()
            rows = Chunk.objects.bulk_create(rows, batch_size=500)
        if not all(c.pk for c in rows):  # backends that cannot return ids from bulk inserts
            rows = list(
                Chunk.objects.filter(document_id__in=[d.pk for d, _ in recreate]).order_by(
                    "document_id", "ordinal"
                )
            )
        for chunk in rows:
            created.setdefault(chunk.document_id, []).append(chunk)
    prepared: list[tuple[Document, list[Chunk]]] = []
    texts: dict[int, str] = {}
    now = timezone.now()  # the heartbeat: the same value in memory and in the database
    for document, doc, _ in parsed:
        chunks = (
            existing.get(document.pk, []) if document.pk in keep else created.get(document.pk, [])
        )
        document.text = texts[document.pk] = doc.text
        document.kind, document.pages, document.chunk_count = doc.kind, doc.pages, len(chunks)
        document.status, document.progress, document.error = Document.Status.EMBEDDING, 5, ""
        document.updated_at = now
        prepared.append((document, chunks))
    # Few distinct (kind, pages, chunk count) values: one UPDATE each beats bulk_update's CASE.
    by_values: dict[tuple[str, int | None, int], list[int]] = {}
    for document, _ in prepared:
        by_values.setdefault((document.kind, document.pages, document.chunk_count), []).append(
            document.pk
        )
    for (kind, pages, count), ids in by_values.items():
        Document.objects.filter(pk__in=ids).update(
            kind=kind,
            pages=pages,
            chunk_count=count,
            updated_at=now,
            status=Document.Status.EMBEDDING,
            progress=5,
            error="",
        )
    for pk, text in texts.items():  # one row each: texts differ, and a CASE would copy them all
        Document.objects.filter(pk=pk).update(text=text)
    return prepared, failed


def _prepare(document: Document, *, force: bool) -> list[Chunk]:
    """Parse and chunk a claimed document (the claim set it parsing)."""
    prepared, failed = _prepare_many(
        document.kb, [document], force=force, embedder=kb_embedder(document.kb)
    )
    if failed:
        raise failed[0][1]
    return prepared[0][1]


def _embed(
    kb: KnowledgeBase, items: Sequence[tuple[Document, Chunk]], embedder: Embedder | None = None
) -> None:
    """Embed one batch (possibly spanning documents) into the base collection."""
    if not items:
        return
    embedder = embedder or kb_embedder(kb)
    vectors = embedder.encode([c.index_text for _, c in items], batch_size=EMBED_BATCH)
    vector_store().upsert(
        collection_name(kb.index_key, BASE_VERSION),
        [str(c.pk) for _, c in items],
        vectors,
        [_metadata(d, c) for d, c in items],
    )
    Chunk.objects.filter(pk__in=[c.pk for _, c in items]).update(embedded=True)
    for _, c in items:
        c.embedded = True


def _finish(document: Document, chunks: Sequence[Chunk]) -> None:
    _finish_many(document.kb, [(document, chunks)])


def _finish_many(kb: KnowledgeBase, done: Sequence[tuple[Document, Sequence[Chunk]]]) -> None:
    """Make fully embedded documents searchable: BM25 last, because it also holds the hit
    metadata, so a half-embedded document never shows up. One BM25 segment for all of them."""
    if not done:
        return
    records: list[IndexedChunk] = []
    for document, chunks in done:
        records.extend(_chunk_records(document, chunks))
    bm25_index(kb).add(records)
    Document.objects.filter(pk__in=[d.pk for d, _ in done]).update(
        status=Document.Status.READY, progress=100, error="", updated_at=timezone.now()
    )
    others = list(
        kb.embedding_indexes.exclude(version=BASE_VERSION).filter(
            status=EmbeddingIndex.Status.READY
        )
    )
    for document, chunks in done:
        document.status, document.progress, document.error = Document.Status.READY, 100, ""
        if others:
            _index_other_versions(document, chunks)
        if document.replaces_id:
            old = Document.objects.filter(pk=document.replaces_id).first()
            if old is not None:
                document_delete(document=old)


def document_ingest(*, document_id: int, force: bool = False) -> Document:
    """Parse → chunk → embed in batches → index one document. Idempotent and resumable: chunks
    already embedded are skipped, chunks embedded but not yet in BM25 are added to it, a ready
    document is left alone unless ``force``. Any failure marks only this document failed, with
    the reason; calling again retries. Safe to call from two workers at once: only the one that
    claims the document ingests it (see :func:`document_ingest_claim`)."""
    document = Document.objects.select_related("kb").get(pk=document_id)
    if document.status == Document.Status.READY and not force:
        return document
    if _gate.stopping:  # this worker is stopping: the document stays for the next one
        return document
    try:  # load the model (cached) before the claim: a heartbeat must not wait on it
        kb_embedder(document.kb)
    except Exception:  # noqa: BLE001 - raised again after the claim, failing the document
        pass
    stamp = document_ingest_claim(document_id=document.pk, force=force)
    if stamp is None:
        log.info("document %s is being ingested by another worker; backing off", document.pk)
        return _refreshed(document)
    document.status, document.progress, document.error = Document.Status.PARSING, 2, ""
    document.updated_at = stamp
    with _gate.tracked():
        return _ingest_claimed(document, stamp, force=force)


def _ingest_claimed(document: Document, stamp: datetime, *, force: bool) -> Document:
    try:
        if _gate.stopping:
            return _hand_back(document, stamp)
        chunks = _prepare(document, force=force)
        stamp = document.updated_at
        todo = [c for c in chunks if not c.embedded]
        done = len(chunks) - len(todo)
        for i in range(0, len(todo), ROUND_SIZE):
            if _gate.stopping:
                return _hand_back(document, stamp)
            batch = todo[i : i + ROUND_SIZE]
            _embed(document.kb, [(document, c) for c in batch])
            done += len(batch)
            beat = _beat(document, stamp, progress=5 + int(90 * done / max(1, len(chunks))))
            if beat is None:
                return _taken_over(document)
            stamp = beat
        _finish(document, chunks)
    except Exception as exc:  # one broken document must never stop the others
        _fail_claimed(document, _failure_reason(exc), {stamp, document.updated_at})
    return document


def _refreshed(document: Document) -> Document:
    try:
        document.refresh_from_db()
    except Document.DoesNotExist:  # deleted meanwhile: the caller gets the last copy it had
        pass
    return document


def _hand_back(document: Document, stamp: datetime) -> Document:
    """The worker is stopping: leave the document queued, with no task and its last heartbeat,
    which reads as "its task is lost": Retry accepts it and any worker's stale sweep resumes it
    (from the chunks already embedded) within seconds of the heartbeat."""
    Document.objects.filter(pk=document.pk, status__in=ACTIVE_STATES, updated_at=stamp).update(
        status=Document.Status.QUEUED
    )
    log.info("document %s handed back: the worker is stopping", document.pk)
    return _refreshed(document)


def _taken_over(document: Document) -> Document:
    log.warning(
        "document %s was taken over (retried, re-indexed, deleted or resumed by another "
        "worker) while this worker ingested it; this run stops",
        document.pk,
    )
    return _refreshed(document)


def _fail_claimed(document: Document, reason: str, stamps: set[datetime]) -> None:
    """Mark a claimed document failed, unless someone took it over meanwhile."""
    now = timezone.now()
    failed = Document.objects.filter(
        pk=document.pk, status__in=ACTIVE_STATES, updated_at__in=stamps
    ).update(status=Document.Status.FAILED, error=reason[:2000], updated_at=now)
    if failed:
        document.status, document.error, document.updated_at = (
            Document.Status.FAILED,
            reason[:2000],
            now,
        )
    else:
        log.warning("document %s failed (%s) after it was taken over", document.pk, reason)


def documents_ingest(
    *, document_ids: Sequence[int], force: bool = False, batch_size: int = 1024
) -> list[Document]:
    """Bulk ingestion (CLI, re-index): the same steps as :func:`document_ingest`, but embedding
    batches span documents, so hundreds of small files embed as fast as one big one.
    A document that fails to parse fails alone; a failed batch fails the documents in it.

    Every document is claimed first (a worker running meanwhile leaves them alone; one that a
    worker holds is skipped and returned as it is), and a heartbeat keeps the claims alive
    until the last batch."""
    documents: dict[int, Document] = {}
    ordered: list[Document] = []
    ids = list(document_ids)
    for start in range(0, len(ids), 500):  # bounded IN lists, whatever the corpus size
        part = ids[start : start + 500]
        found = Document.objects.select_related("kb").in_bulk(part)
        documents.update(found)
        ordered.extend(found[i] for i in part if i in found)
    pending: dict[int, list[Chunk]] = {}  # document id -> its chunks, until all are embedded
    buffer: list[tuple[Document, Chunk]] = []
    failed: set[int] = set()
    embedders: dict[int, Embedder] = {}
    todo_docs: list[Document] = []
    candidates = [d for d in ordered if force or d.status != Document.Status.READY]
    for start in range(0, len(candidates), 500):
        with transaction.atomic():  # one commit for many claims
            for document in candidates[start : start + 500]:
                stamp = document_ingest_claim(document_id=document.pk, force=force)
                if stamp is None:
                    log.info("document %s is being ingested by a worker; skipped", document.pk)
                    continue
                document.status, document.progress, document.error = (
                    Document.Status.PARSING,
                    2,
                    "",
                )
                document.updated_at = stamp
                todo_docs.append(document)
    claimed = [d.pk for d in todo_docs]
    beat_every = ingest_stale_after().total_seconds() / 3
    last_beat = time.monotonic()

    def keep_alive() -> None:
        """The heartbeat of every claimed document not yet ready or failed, now and then."""
        nonlocal last_beat
        if time.monotonic() - last_beat < beat_every:
            return
        last_beat = time.monotonic()
        now = timezone.now()
        for start in range(0, len(claimed), 500):
            Document.objects.filter(
                pk__in=claimed[start : start + 500], status__in=ACTIVE_STATES
            ).update(updated_at=now)

    def flush(final: bool = False) -> None:
        while buffer and (final or len(buffer) >= batch_size):
            batch = buffer[:batch_size]
            del buffer[:batch_size]
            kb = batch[0][0].kb
            try:
                _embed(kb, batch, embedders.get(kb.pk))
                keep_alive()
            except Exception as exc:
                for doc in {d.pk: d for d, _ in batch}.values():
                    failed.add(doc.pk)
                    _fail(doc, _failure_reason(exc))
                    pending.pop(doc.pk, None)
                buffer[:] = [(d, c) for d, c in buffer if d.pk not in failed]
                continue
            complete = [
                (documents[i], pending.pop(i))
                for i in dict.fromkeys(d.pk for d, _ in batch)
                if i in pending and all(c.embedded for c in pending[i])
            ]
            try:
                _finish_many(kb, complete)
            except Exception as exc:
                for doc, _ in complete:
                    _fail(doc, _failure_reason(exc))

    group_size = 64
    for start in range(0, len(todo_docs), group_size):
        keep_alive()
        group = todo_docs[start : start + group_size]
        by_kb: dict[int, list[Document]] = {}
        for document in group:
            by_kb.setdefault(document.kb_id, []).append(document)
        for kb_docs in by_kb.values():
            kb = kb_docs[0].kb
            embedder = embedders.setdefault(kb.pk, kb_embedder(kb))
            prepared, broken = _prepare_many(kb, kb_docs, force=force, embedder=embedder)
            for document, exc in broken:
                _fail(document, _failure_reason(exc))
            if buffer and buffer[0][0].kb_id != kb.pk:
                flush(final=True)
            already = []
            for document, chunks in prepared:
                todo = [c for c in chunks if not c.embedded]
                if todo:
                    pending[document.pk] = chunks
                    buffer.extend((document, c) for c in todo)
                else:
                    already.append((document, chunks))
            try:
                _finish_many(kb, already)
            except Exception as exc:
                for document, _ in already:
                    _fail(document, _failure_reason(exc))
            flush()
    flush(final=True)
    fresh: dict[int, Document] = {}
    for start in range(0, len(ordered), 500):
        fresh.update(Document.objects.in_bulk([d.pk for d in ordered[start : start + 500]]))
    return [fresh[d.pk] for d in ordered if d.pk in fresh]


def _fail(document: Document, reason: str) -> None:
    _set_status(document, Document.Status.FAILED, error=reason[:2000])


def _index_other_versions(document: Document, chunks: Sequence[Chunk]) -> None:
    """Keep tuned embedding versions in step with the base index."""
    for idx in document.kb.embedding_indexes.exclude(version=BASE_VERSION).filter(
        status=EmbeddingIndex.Status.READY
    ):
        embedder = kb_embedder(document.kb, idx.model)
        coll = collection_name(document.kb.index_key, idx.version)
        for i in range(0, len(chunks), ROUND_SIZE):
            batch = chunks[i : i + ROUND_SIZE]
            vectors = embedder.encode([c.index_text for c in batch], batch_size=EMBED_BATCH)
            vector_store().upsert(
                coll, [str(c.pk) for c in batch], vectors, [_metadata(document, c) for c in batch]
            )
