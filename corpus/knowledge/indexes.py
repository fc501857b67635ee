"""Where a knowledge base's indexes live: the vector store, the BM25 index, the embedder.

Shared by the request side (search, upload) and the worker side (ingestion); it enqueues nothing.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from corpus.models import Document, KnowledgeBase
from raftweb.core.audit import audit
from raftweb.core.services import profile_spec
from raftweb.core.warmup import query_batching
from raftweb.errors import RaftwebError
from raftweb.retrieval import (
    BM25Index,
    Embedder,
    VectorStore,
    collection_name,
    load_embedder,
    open_vector_store,
)
from raftweb.retrieval.embedder import model_max_input_tokens


class CorpusError(RaftwebError):
    """A user-facing failure of a knowledge-base service (bad input, missing thing, a store
    that cannot be reached)."""


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

    return profile_spec("embedding").model


def kb_embedder(kb: KnowledgeBase, model: str | None = None) -> Embedder:
    embedder = load_embedder(
        model or embedding_model_name(kb),
        setting="the 'embedding' model profile (Settings → Models, or RAFTWEB_EMBEDDING_MODEL)",
    )
    embedder.configure_batching(**query_batching())
    return embedder


def kb_chunk_token_cap(kb: KnowledgeBase) -> int | None:
    """How many tokens a chunk of ``kb`` may hold: what its embedding model reads (chunking caps
    the KB's chunk size at it). Read from the model's config when it is not loaded; None when
    unknown (a hub id not downloaded yet)."""
    return model_max_input_tokens(embedding_model_name(kb))


def upload_root() -> Path:
    return Path(settings.MEDIA_ROOT)


def document_delete(*, document: Document) -> None:
    """Remove a document: BM25 postings first (it disappears from search), then vectors of every
    embedding version, then rows and the stored file (unless another row shares the bytes)."""
    kb = document.kb
    bm25_index(kb).remove_document(document.pk)
    store = vector_store()
    for version in kb.embedding_indexes.values_list("version", flat=True):
        store.delete_document(collection_name(kb.index_key, version), document.pk)
    path = upload_root() / document.file_path
    audit(None, "document.delete", document)
    document.delete()
    if not Document.objects.filter(file_path=str(document.file_path)).exists():
        path.unlink(missing_ok=True)
