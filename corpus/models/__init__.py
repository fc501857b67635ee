"""Corpus models, split by area so several people can edit them without clashing."""

from __future__ import annotations

from corpus.models.knowledge import BASE_VERSION, Chunk, Document, EmbeddingIndex, KnowledgeBase

try:  # Q&A models live beside these (owned by the RAFT side of the project).
    from corpus.models.qa import *  # noqa: F401,F403
except ModuleNotFoundError as exc:  # pragma: no cover - until that file lands
    if exc.name != "corpus.models.qa":
        raise

__all__ = ["BASE_VERSION", "Chunk", "Document", "EmbeddingIndex", "KnowledgeBase"]
