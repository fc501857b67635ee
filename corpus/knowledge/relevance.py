"""How well a search hit matches its query, in words a person understands.

A hybrid search always returns k chunks, and its reciprocal-rank-fusion scores (0.0164…) only
order them: they say nothing about whether anything matched at all. The cue comes from the
evidence a person would trust: the cosine similarity of the query and the chunk under the
knowledge base's embedding model, helped by whether BM25 found the query's words in the chunk.

The thresholds are set for all-MiniLM-L6-v2 (the bundled default), measured on the test
manuals: a real question scores 0.45-0.7 against the chunk that answers it, a loosely related
chunk 0.25-0.45, gibberish and off-topic questions under 0.2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STRONG = 0.45
WEAK = 0.3
# A chunk that contains the query's words is a weak match from this similarity on.
LEXICAL_WEAK = 0.2


@dataclass(frozen=True, slots=True)
class Cue:
    level: str  # "strong", "weak" or "none"
    label: str
    similarity: float | None


LABELS = {"strong": "strong match", "weak": "weak match", "none": "no good match"}


def cue_for(similarity: float | None, *, lexical: bool) -> Cue:
    if similarity is None:
        return Cue("weak" if lexical else "none", LABELS["weak" if lexical else "none"], None)
    if similarity >= STRONG:
        level = "strong"
    elif similarity >= WEAK or (lexical and similarity >= LEXICAL_WEAK):
        level = "weak"
    else:
        level = "none"
    return Cue(level, LABELS[level], round(float(similarity), 3))


def similarities(embedder: Any, query: str, texts: Sequence[str]) -> list[float]:
    """Cosine similarity of the query with each text (the embedder's vectors are unit length)."""
    if not texts:
        return []
    vectors = embedder.encode([query, *texts])
    return [float(x) for x in np.asarray(vectors[1:]) @ np.asarray(vectors[0])]


def relevance_cues(*, embedder: Any | None, query: str, hits: Sequence[Any]) -> list[Cue]:
    """One cue per hit. A hit that already carries its dense cosine (``dense_score``) is not
    embedded again; without an embedder (it failed to load) only BM25's evidence is left."""
    known = [getattr(h, "dense_score", None) for h in hits]
    missing = [i for i, s in enumerate(known) if s is None]
    if missing and embedder is not None:
        for i, sim in zip(
            missing, similarities(embedder, query, [hits[i].text for i in missing]), strict=True
        ):
            known[i] = sim
    return [
        cue_for(sim, lexical=getattr(h, "bm25_rank", None) is not None)
        for sim, h in zip(known, hits, strict=True)
    ]
