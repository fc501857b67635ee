"""Turning a configuration's names into what answers: the embedding version retrieval searches
and the generator (through :func:`training.serving.generator_spec`, the seam chat uses).

Everything a run names is resolved here before the run is created, so a configuration that
names a missing version fails with a clear message and nothing runs."""

from __future__ import annotations

from dataclasses import dataclass

from corpus.knowledge.search import resolve_embedding_version
from corpus.models import EmbeddingIndex, KnowledgeBase
from raftweb.errors import Conflict, NotFound
from raftweb.eval.configs import EvalConfig
from training.models import ModelKind, ModelVersion
from training.serving import generator_spec


@dataclass(frozen=True, slots=True)
class Resolved:
    embedding_version: str  # the EmbeddingIndex version label ("base", "v3-emb", ...)
    generator_label: str
    generator_version_id: int | None


def embedding_label(kb: KnowledgeBase, emb: str) -> str:
    """``base`` / ``active`` / ``version:<model version id or index label>`` -> index label."""
    if emb in ("base", "active"):
        return resolve_embedding_version(kb, emb).version
    ident = emb.removeprefix("version:").strip()
    label = ident
    if ident.isdigit():
        version = ModelVersion.objects.filter(
            kb=kb, kind=ModelKind.EMBEDDING, pk=int(ident)
        ).first()
        if version is None:
            raise NotFound(f"Knowledge base {kb.slug!r} has no embedding version {ident}.")
        label = version.embedding_version or version.label
    index = kb.embedding_indexes.filter(version=label).first()
    if index is None:
        raise NotFound(f"Knowledge base {kb.slug!r} has no embedding index {label!r}.")
    if index.status != EmbeddingIndex.Status.READY:
        raise Conflict(
            f"The embedding index {label!r} of {kb.slug!r} is {index.status}, not ready.",
            code="index_not_ready",
        )
    return label


def resolve_config(kb: KnowledgeBase, config: EvalConfig) -> Resolved:
    """Raises NotFound / Invalid / Conflict with a message naming the configuration."""
    label = embedding_label(kb, config.emb)
    _spec, gen_label, version_id = generator_spec(kb, config.gen)
    return Resolved(label, gen_label, version_id)
