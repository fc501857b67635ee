"""Retrieval engine: embedder, vector store, BM25, fusion, retriever. Never imports Django."""

from __future__ import annotations

from raftweb.retrieval.bm25 import BM25Error, BM25Index, IndexedChunk
from raftweb.retrieval.embedder import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    EmbeddingModelNotFound,
    LazyEmbedder,
    load_embedder,
)
from raftweb.retrieval.fusion import DEFAULT_RRF_K, reciprocal_rank_fusion
from raftweb.retrieval.retriever import RetrievalError, Retriever, rank_documents
from raftweb.retrieval.store import (
    UnknownVectorStore,
    VectorStore,
    VectorStoreError,
    VectorStoreUnavailable,
    collection_name,
    open_vector_store,
    stores,
)
from raftweb.retrieval.types import SEARCH_MODES, SearchHit

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_RRF_K",
    "SEARCH_MODES",
    "BM25Error",
    "BM25Index",
    "Embedder",
    "IndexedChunk",
    "LazyEmbedder",
    "EmbeddingModelNotFound",
    "RetrievalError",
    "Retriever",
    "SearchHit",
    "UnknownVectorStore",
    "VectorStore",
    "VectorStoreError",
    "VectorStoreUnavailable",
    "collection_name",
    "load_embedder",
    "open_vector_store",
    "rank_documents",
    "reciprocal_rank_fusion",
    "stores",
]
