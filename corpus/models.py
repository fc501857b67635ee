"""The corpus app's models, defined in its three rooms and gathered here for Django.

knowledge: knowledge bases, documents, chunks, embedding versions, document splits;
generation: jobs, units, model calls, prompt overrides; dataset: Q&A pairs, review events.
"""

from __future__ import annotations

from corpus.dataset.models import QAPair, ReviewEvent
from corpus.generation.models import GenerationJob, GenerationUnit, KBPromptOverrides, ModelCall
from corpus.knowledge.models import (
    BASE_VERSION,
    Chunk,
    Document,
    DocumentSplit,
    EmbeddingIndex,
    KnowledgeBase,
    Split,
)

__all__ = [
    "BASE_VERSION",
    "Chunk",
    "Document",
    "DocumentSplit",
    "EmbeddingIndex",
    "GenerationJob",
    "GenerationUnit",
    "KBPromptOverrides",
    "KnowledgeBase",
    "ModelCall",
    "QAPair",
    "ReviewEvent",
    "Split",
]
