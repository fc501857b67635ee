"""Knowledge-base services: create, update, delete, upload, retry, re-index, embedding versions.

The request side: these validate, write and enqueue; the worker-side ingestion is in
:mod:`corpus.knowledge.ingestion`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from corpus.knowledge.indexes import (
    CorpusError,
    _bm25_cache,
    _bm25_lock,
    bm25_index,
    bm25_path,
    kb_embedder,
    upload_root,
    vector_store,
)
from corpus.knowledge.ingestion import ROUND_SIZE, _metadata, document_requeue, documents_ingest
from corpus.knowledge.selectors import document_is_live, documents_stale, ingest_stale_after
from corpus.knowledge.uploads import (
    max_upload_bytes,
    original_filename,
    sanitize_filename,
    stream_to_temp,
)
from corpus.models import BASE_VERSION, Chunk, Document, EmbeddingIndex, KnowledgeBase
from corpus.tasks import document_ingest_task, document_ingests_waiting
from raftweb.core.audit import audit
from raftweb.retrieval import (
    EmbeddingModelNotFound,
    VectorStoreError,
    collection_name,
    load_embedder,
)


# --------------------------------------------------------------------------- knowledge bases
def _unique_slug(base: str) -> str:
    base = (slugify(base) or "kb")[:70]
    slug, n = base, 2
    while KnowledgeBase.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


# A well-formed request whose values are invalid: 422 `invalid` (the README's error table).
INVALID = 422


def _check_chunking(chunk_size: int, chunk_overlap: int) -> None:
    if not 16 <= chunk_size <= 4096:
        raise CorpusError("chunk size must be between 16 and 4096 tokens", status=INVALID)
    if not 0 <= chunk_overlap < chunk_size // 2 + 1:
        raise CorpusError(
            "chunk overlap must be at least 0 and at most half the chunk size", status=INVALID
        )


def kb_create(
    *,
    name: str,
    slug: str = "",
    description: str = "",
    chunk_size: int = 300,
    chunk_overlap: int = 30,
    embedding_model: str = "",
    allowed_groups: Iterable[Group | str] = (),
    user: Any = None,
) -> KnowledgeBase:
    name = (name or "").strip()
    if not name:
        raise CorpusError("a knowledge base needs a name", status=INVALID)
    _check_chunking(chunk_size, chunk_overlap)
    slug = slugify(slug) if slug else _unique_slug(name)
    if not slug:
        raise CorpusError("the slug must contain letters or digits", status=INVALID)
    if KnowledgeBase.objects.filter(slug=slug).exists():
        raise CorpusError(
            f"a knowledge base with slug {slug!r} already exists", code="conflict", status=409
        )
    if embedding_model.strip():
        try:  # fail now, not on every document later
            load_embedder(embedding_model.strip(), setting="the knowledge base's embedding model")
        except EmbeddingModelNotFound as exc:
            raise CorpusError(str(exc)) from exc
    with transaction.atomic():
        kb = KnowledgeBase.objects.create(
            slug=slug,
            name=name[:200],
            description=description,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            embedding_model=embedding_model.strip(),
            created_by=user if getattr(user, "pk", None) else None,
        )
        _set_groups(kb, allowed_groups)
        EmbeddingIndex.objects.create(kb=kb, version=BASE_VERSION, model=embedding_model.strip())
        audit(user, "kb.create", kb)
    return kb


def _set_groups(kb: KnowledgeBase, groups: Iterable[Group | str]) -> None:
    resolved = []
    for g in groups:
        if isinstance(g, Group):
            resolved.append(g)
        else:
            group = Group.objects.filter(name=g).first()
            if group is None:
                raise CorpusError(f"unknown group {g!r}")
            resolved.append(group)
    kb.allowed_groups.set(resolved)


def kb_update(
    *,
    kb: KnowledgeBase,
    name: str | None = None,
    description: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    allowed_groups: Iterable[Group | str] | None = None,
) -> KnowledgeBase:
    """Rename / describe / re-parametrise. New chunking applies on the next re-index."""
    if name is not None:
        if not name.strip():
            raise CorpusError("a knowledge base needs a name", status=INVALID)
        kb.name = name.strip()[:200]
    if description is not None:
        kb.description = description
    size = kb.chunk_size if chunk_size is None else chunk_size
    overlap = kb.chunk_overlap if chunk_overlap is None else chunk_overlap
    _check_chunking(size, overlap)
    kb.chunk_size, kb.chunk_overlap = size, overlap
    kb.save()
    if allowed_groups is not None:
        _set_groups(kb, allowed_groups)
    return kb


def kb_delete(*, kb: KnowledgeBase) -> None:
    """Delete the KB with its documents, chunks, vectors (every version), BM25 index and files."""
    store = vector_store()
    for idx in kb.embedding_indexes.all():
        try:
            store.drop(collection_name(kb.index_key, idx.version))
        except VectorStoreError as exc:
            raise CorpusError(
                f"cannot delete the vectors: {exc}", code="unavailable", status=503
            ) from exc
    index = bm25_index(kb)
    index.delete_files()
    with _bm25_lock:
        _bm25_cache.pop(str(bm25_path(kb)), None)
    folder = upload_root() / f"kb_{kb.pk}"
    audit(None, "kb.delete", kb, documents=kb.documents.count())
    kb.delete()
    shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- upload
@dataclass(frozen=True, slots=True)
class UploadResult:
    document: Document
    created: bool  # False: identical bytes were already in this KB (nothing indexed twice)
    replaced: Document | None = None  # the previous version of the same file name


def document_upload(
    *,
    kb: KnowledgeBase,
    name: str,
    chunks: Iterable[bytes],
    user: Any = None,
    max_bytes: int | None = None,
    enqueue: bool = True,
) -> UploadResult:
    """Store an uploaded file (streamed, size-limited, deduplicated by content) and queue it.

    Raises UploadTooLarge (nothing kept), CorpusError for an empty file.
    """
    limit = max_bytes or max_upload_bytes()
    safe = sanitize_filename(name)
    root = upload_root()
    tmp, digest, size = stream_to_temp(chunks, directory=root / "tmp", limit=limit)
    try:
        if size == 0:
            raise CorpusError(f"{safe}: the file is empty", code="empty")
        rel = Path(f"kb_{kb.pk}") / digest[:2] / f"{digest}{Path(safe).suffix[:12]}"
        final = root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Optimistic insert: the unique (kb, content_hash) constraint recognises identical
            # bytes — uploaded earlier or at this very moment — in one round trip.
            with transaction.atomic():
                previous = (
                    Document.objects.select_for_update()
                    .filter(kb=kb, name=safe)
                    .order_by("-version")
                    .first()
                )
                version = (previous.version + 1) if previous else 1
                document = Document.objects.create(
                    kb=kb,
                    name=safe,
                    original_filename=original_filename(name),
                    file_path=str(rel),
                    content_hash=digest,
                    version=version,
                    replaces=previous,
                    size=size,
                    created_by=user if getattr(user, "pk", None) else None,
                )
                # In the same transaction: an upload that is stored is audited, and one whose
                # audit entry cannot be written is not stored (never "failed" yet kept).
                audit(user, "document.upload", document, size=size, version=version)
        except IntegrityError:
            existing = Document.objects.filter(kb=kb, content_hash=digest).first()
            if existing is None:
                raise
            if existing.status == Document.Status.FAILED and enqueue:
                document_retry(document=existing)  # uploading it again is the natural retry
            return UploadResult(existing, created=False)
        tmp.replace(final)  # content-addressed: concurrent duplicates write the same name
        if enqueue:
            _enqueue_ingest(document.pk)
        return UploadResult(document, created=True, replaced=previous)
    finally:
        tmp.unlink(missing_ok=True)


def _enqueue_ingest(document_id: int) -> None:

    transaction.on_commit(lambda: document_ingest_task(document_id))


def document_retry(*, document: Document) -> Document:
    """Queue a failed document again, or one whose ingestion lost its worker: parsing/embedding
    with no heartbeat for RAFTWEB_INGEST_STALE_SECONDS, or queued with no task waiting for it.
    The ingestion resumes from the chunks already embedded. A document a worker is ingesting
    now, or whose task waits in the queue, is refused with the reason (409)."""
    document.refresh_from_db()
    if document.status == Document.Status.READY:
        raise CorpusError("only failed or stalled documents can be retried; this one is ready")
    if document_is_live(document):
        seconds = int((timezone.now() - document.updated_at).total_seconds())
        raise CorpusError(
            f"a worker is ingesting this document ({document.status}, {document.progress}%, "
            f"last progress {seconds} s ago); it can be retried once it fails or makes no "
            f"progress for {int(ingest_stale_after().total_seconds())} s",
            code="conflict",
            status=409,
        )
    if document.status != Document.Status.FAILED and not documents_stale(
        ids=[document.pk], waiting=document_ingests_waiting
    ):
        raise CorpusError(
            "this document is queued and its task is waiting for a worker "
            "(is a worker running? `make run` starts one)",
            code="conflict",
            status=409,
        )
    if not document_requeue(document_id=document.pk):  # claimed or requeued meanwhile
        raise CorpusError(
            "a worker has just taken this document; it is being ingested",
            code="conflict",
            status=409,
        )
    document.refresh_from_db()
    _enqueue_ingest(document.pk)
    return document


def kb_reindex(*, kb: KnowledgeBase, enqueue: bool = True) -> int:
    """Re-parse, re-chunk (current chunk settings) and re-embed every document; returns how many."""
    store = vector_store()
    store.drop(collection_name(kb.index_key, BASE_VERSION))
    bm25_index(kb).clear()
    Chunk.objects.filter(document__kb=kb).update(embedded=False)
    ids = list(kb.documents.values_list("pk", flat=True))
    kb.documents.update(
        status=Document.Status.QUEUED, progress=0, error="", updated_at=timezone.now()
    )
    if enqueue:
        for pk in ids:
            _enqueue_ingest(pk)
    else:
        documents_ingest(document_ids=ids, force=True)
    return len(ids)


# --------------------------------------------------------------------------- embedding versions
def kb_embedding_add(
    *, kb: KnowledgeBase, version: str, model: str, activate: bool = False
) -> EmbeddingIndex:
    """Index every chunk of ``kb`` with another embedding model (e.g. a fine-tuned one) into its
    own collection, beside the base one, so the two can be compared."""
    version = slugify(version)[:100]
    if not version or version in (BASE_VERSION, "active"):
        raise CorpusError("choose a version label other than 'base' or 'active'")
    index, _ = EmbeddingIndex.objects.update_or_create(
        kb=kb,
        version=version,
        defaults={"model": model, "status": EmbeddingIndex.Status.BUILDING, "error": ""},
    )
    try:
        embedder = kb_embedder(kb, model)
        store = vector_store()
        coll = collection_name(kb.index_key, version)
        store.drop(coll)
        for document in kb.documents.filter(status=Document.Status.READY):
            chunks = list(document.chunks.order_by("ordinal"))
            for i in range(0, len(chunks), ROUND_SIZE):
                batch = chunks[i : i + ROUND_SIZE]
                store.upsert(
                    coll,
                    [str(c.pk) for c in batch],
                    embedder.encode([c.index_text for c in batch]),
                    [_metadata(document, c) for c in batch],
                )
    except (EmbeddingModelNotFound, VectorStoreError) as exc:
        index.status, index.error = EmbeddingIndex.Status.FAILED, str(exc)
        index.save(update_fields=["status", "error"])
        raise CorpusError(str(exc), code="unavailable", status=503) from exc
    index.status = EmbeddingIndex.Status.READY
    index.save(update_fields=["status"])
    if activate:
        kb.embedding_version = version
        kb.save(update_fields=["embedding_version", "updated_at"])
    return index


def kb_embedding_activate(*, kb: KnowledgeBase, version: str) -> KnowledgeBase:
    if not kb.embedding_indexes.filter(
        version=version, status=EmbeddingIndex.Status.READY
    ).exists():
        raise CorpusError(
            f"no ready embedding version {version!r} for this knowledge base",
            code="not_found",
            status=404,
        )
    kb.embedding_version = version
    kb.save(update_fields=["embedding_version", "updated_at"])
    audit(None, "embedding.activate", kb, version=version)
    return kb
