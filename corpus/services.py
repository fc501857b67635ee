"""Knowledge-base services: one code path under the UI, the API and the CLI."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from corpus.models import BASE_VERSION, Chunk, Document, EmbeddingIndex, KnowledgeBase
from corpus.uploads import UploadTooLarge, max_upload_bytes, sanitize_filename, stream_to_temp
from raftweb.ingest import ParseError, chunk_document, parse_bytes
from raftweb.retrieval import (
    BM25Index,
    Embedder,
    IndexedChunk,
    ModelNotFound,
    Retriever,
    SearchHit,
    VectorStore,
    VectorStoreError,
    collection_name,
    load_embedder,
    open_vector_store,
)

log = logging.getLogger(__name__)

# Small batches pad less: on CPU, all-MiniLM-L6-v2 encodes E-Manual chunks ~20% faster at 16
# than at 64 (sentence-transformers sorts by length, but pads within each batch).
EMBED_BATCH = 16
# Chunks per embedding round of one document: one upsert and one progress update each.
ROUND_SIZE = 128


class CorpusError(Exception):
    """A user-facing failure of a corpus service (bad input, missing thing)."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- infrastructure
def vector_store() -> VectorStore:
    """The configured store: a Chroma server (CHROMA_URL) or embedded Chroma (CHROMA_PATH)."""
    return open_vector_store(settings.CHROMA_URL, settings.CHROMA_PATH)


_bm25_cache: dict[str, BM25Index] = {}
_bm25_lock = threading.Lock()


def bm25_path(kb: KnowledgeBase) -> Path:
    return Path(settings.DATA_DIR) / "bm25" / f"kb_{kb.index_key}.sqlite3"


def bm25_index(kb: KnowledgeBase) -> BM25Index:
    path = bm25_path(kb)
    key = str(path)
    with _bm25_lock:
        index = _bm25_cache.get(key)
        if index is None or not path.exists():
            index = BM25Index(path)
            _bm25_cache[key] = index
        return index


def embedding_model_name(kb: KnowledgeBase) -> str:
    if kb.embedding_model:
        return kb.embedding_model
    from raftweb.core.services import profile_spec

    return profile_spec("embedding").model


def kb_embedder(kb: KnowledgeBase, model: str | None = None) -> Embedder:
    return load_embedder(
        model or embedding_model_name(kb),
        setting="the 'embedding' model profile (Settings → Models, or RAFTWEB_EMBEDDING_MODEL)",
    )


def upload_root() -> Path:
    return Path(settings.MEDIA_ROOT)


# --------------------------------------------------------------------------- knowledge bases
def _unique_slug(base: str) -> str:
    base = (slugify(base) or "kb")[:70]
    slug, n = base, 2
    while KnowledgeBase.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def _check_chunking(chunk_size: int, chunk_overlap: int) -> None:
    if not 16 <= chunk_size <= 4096:
        raise CorpusError("chunk size must be between 16 and 4096 tokens")
    if not 0 <= chunk_overlap < chunk_size // 2 + 1:
        raise CorpusError("chunk overlap must be at least 0 and at most half the chunk size")


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
        raise CorpusError("a knowledge base needs a name")
    _check_chunking(chunk_size, chunk_overlap)
    slug = slugify(slug) if slug else _unique_slug(name)
    if not slug:
        raise CorpusError("the slug must contain letters or digits")
    if KnowledgeBase.objects.filter(slug=slug).exists():
        raise CorpusError(f"a knowledge base with slug {slug!r} already exists", code="conflict")
    if embedding_model.strip():
        try:  # fail now, not on every document later
            load_embedder(embedding_model.strip(), setting="the knowledge base's embedding model")
        except ModelNotFound as exc:
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
            raise CorpusError("a knowledge base needs a name")
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
            raise CorpusError(f"cannot delete the vectors: {exc}", code="unavailable") from exc
    index = bm25_index(kb)
    index.delete_files()
    with _bm25_lock:
        _bm25_cache.pop(str(bm25_path(kb)), None)
    folder = upload_root() / f"kb_{kb.pk}"
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
                    original_filename=sanitize_filename(name),
                    file_path=str(rel),
                    content_hash=digest,
                    version=version,
                    replaces=previous,
                    size=size,
                    created_by=user if getattr(user, "pk", None) else None,
                )
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
    from corpus.tasks import document_ingest_task

    transaction.on_commit(lambda: document_ingest_task(document_id))


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
    if isinstance(exc, (ParseError, ModelNotFound)):
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
            doc = parse_bytes(data, document.name)
            pieces = chunk_document(
                doc,
                size=kb.chunk_size,
                overlap=kb.chunk_overlap,
                token_offsets=embedder.token_offsets,
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
    for document, doc, _ in parsed:
        chunks = (
            existing.get(document.pk, []) if document.pk in keep else created.get(document.pk, [])
        )
        document.text = texts[document.pk] = doc.text
        document.kind, document.pages, document.chunk_count = doc.kind, doc.pages, len(chunks)
        document.status, document.progress, document.error = Document.Status.EMBEDDING, 5, ""
        document.updated_at = timezone.now()
        prepared.append((document, chunks))
    # Few distinct (kind, pages, chunk count) values: one UPDATE each beats bulk_update's CASE.
    by_values: dict[tuple[str, int | None, int], list[int]] = {}
    for document, _ in prepared:
        by_values.setdefault((document.kind, document.pages, document.chunk_count), []).append(
            document.pk
        )
    now = timezone.now()
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
    _set_status(document, Document.Status.PARSING, progress=2)
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
    already embedded are skipped, a ready document is left alone unless ``force``. Any failure
    marks only this document failed, with the reason; calling again retries."""
    document = Document.objects.select_related("kb").get(pk=document_id)
    if document.status == Document.Status.READY and not force:
        return document
    try:
        chunks = _prepare(document, force=force)
        todo = [c for c in chunks if not c.embedded]
        done = len(chunks) - len(todo)
        for i in range(0, len(todo), ROUND_SIZE):
            batch = todo[i : i + ROUND_SIZE]
            _embed(document.kb, [(document, c) for c in batch])
            done += len(batch)
            Document.objects.filter(pk=document.pk).update(
                progress=5 + int(90 * done / max(1, len(chunks)))
            )
        _finish(document, chunks)
    except Exception as exc:  # one broken document must never stop the others
        _fail(document, _failure_reason(exc))
    return document


def documents_ingest(
    *, document_ids: Sequence[int], force: bool = False, batch_size: int = 1024
) -> list[Document]:
    """Bulk ingestion (CLI, re-index): the same steps as :func:`document_ingest`, but embedding
    batches span documents, so hundreds of small files embed as fast as one big one.
    A document that fails to parse fails alone; a failed batch fails the documents in it."""
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

    def flush(final: bool = False) -> None:
        while buffer and (final or len(buffer) >= batch_size):
            batch = buffer[:batch_size]
            del buffer[:batch_size]
            kb = batch[0][0].kb
            try:
                _embed(kb, batch, embedders.get(kb.pk))
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

    todo_docs = [d for d in ordered if force or d.status != Document.Status.READY]
    group_size = 64
    for start in range(0, len(todo_docs), group_size):
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


def document_retry(*, document: Document) -> Document:
    if document.status != Document.Status.FAILED:
        raise CorpusError("only failed documents can be retried")
    _set_status(document, Document.Status.QUEUED, progress=0)
    _enqueue_ingest(document.pk)
    return document


def document_delete(*, document: Document) -> None:
    """Remove a document: BM25 postings first (it disappears from search), then vectors of every
    embedding version, then rows and the stored file (unless another row shares the bytes)."""
    kb = document.kb
    bm25_index(kb).remove_document(document.pk)
    store = vector_store()
    for version in kb.embedding_indexes.values_list("version", flat=True):
        store.delete_document(collection_name(kb.index_key, version), document.pk)
    path = upload_root() / document.file_path
    document.delete()
    if not Document.objects.filter(file_path=str(document.file_path)).exists():
        path.unlink(missing_ok=True)


def kb_reindex(*, kb: KnowledgeBase, enqueue: bool = True) -> int:
    """Re-parse, re-chunk (current chunk settings) and re-embed every document; returns how many."""
    store = vector_store()
    store.drop(collection_name(kb.index_key, BASE_VERSION))
    bm25_index(kb).clear()
    Chunk.objects.filter(document__kb=kb).update(embedded=False)
    ids = list(kb.documents.values_list("pk", flat=True))
    kb.documents.update(status=Document.Status.QUEUED, progress=0, error="")
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
    except (ModelNotFound, VectorStoreError) as exc:
        index.status, index.error = EmbeddingIndex.Status.FAILED, str(exc)
        index.save(update_fields=["status", "error"])
        raise CorpusError(str(exc), code="unavailable") from exc
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
            f"no ready embedding version {version!r} for this knowledge base", code="not_found"
        )
    kb.embedding_version = version
    kb.save(update_fields=["embedding_version", "updated_at"])
    return kb


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
            raise CorpusError(f"unknown embedding version {version!r}", code="not_found")
    return index


# --------------------------------------------------------------------------- search
def kb_search(
    *,
    kb: KnowledgeBase,
    query: str,
    mode: str = "hybrid",
    k: int = 5,
    document_ids: Sequence[int] | None = None,
    embedding_version: str | None = None,
) -> list[SearchHit]:
    """Search one knowledge base. Hits carry ``chunk_id == str(Chunk.pk)``."""
    if mode not in ("hybrid", "dense", "bm25"):
        raise CorpusError(f"unknown search mode {mode!r}; use hybrid, dense or bm25")
    k = max(1, min(int(k), 200))
    index = resolve_embedding_version(kb, embedding_version)
    embedder = kb_embedder(kb, index.model or None) if mode != "bm25" else None
    retriever = Retriever(
        store=vector_store(),
        collection=collection_name(kb.index_key, index.version),
        bm25=bm25_index(kb),
        embedder=embedder,
    )  # type: ignore[arg-type]
    try:
        return retriever.search(query, mode=mode, k=k, document_ids=document_ids)
    except VectorStoreError as exc:
        raise CorpusError(str(exc), code="unavailable") from exc


__all__ = [
    "CorpusError",
    "UploadResult",
    "UploadTooLarge",
    "bm25_index",
    "document_delete",
    "document_ingest",
    "document_retry",
    "document_upload",
    "documents_ingest",
    "kb_create",
    "kb_delete",
    "kb_embedding_activate",
    "kb_embedding_add",
    "kb_reindex",
    "kb_search",
    "kb_update",
    "resolve_embedding_version",
    "vector_store",
]


# --------------------------------------------------------------------------- retrieval evaluation
def _name_keys(name: str) -> set[str]:
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return {name, stem}


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
    from raftweb.metrics import mean, mrr, recall_at_k

    ks = sorted({int(k) for k in k_values if int(k) > 0}) or [1, 5, 10]
    depth = max(50, 10 * max(ks))  # enough chunks that max(k) distinct documents can appear
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    rrs: list[float] = []
    details: list[dict[str, Any]] = []
    for q in questions:
        text = str(q.get("question") or "").strip()
        gold_raw = q.get("gold") or []
        gold = {g for g in ([gold_raw] if isinstance(gold_raw, str) else gold_raw) if g}
        if not text or not gold:
            raise CorpusError(f"each line needs a non-empty 'question' and 'gold' list: {q!r}")
        hits = kb_search(kb=kb, query=text, mode=mode, k=depth, embedding_version=embedding_version)
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
