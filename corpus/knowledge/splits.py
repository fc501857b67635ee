"""The stable per-document train/eval split of a knowledge base (the rule itself is raftweb.raft.splits)."""

from __future__ import annotations

from corpus.models import (
    Document,
    DocumentSplit,
    KnowledgeBase,
)
from raftweb.raft.splits import DEFAULT_EVAL_SHARE, split_documents


def kb_document_splits(
    *, kb: KnowledgeBase, seed: int = 0, eval_share: float = DEFAULT_EVAL_SHARE
) -> dict[int, str]:
    """Every ready document's split; documents seen before keep theirs."""
    doc_ids = list(Document.objects.filter(kb=kb).values_list("pk", flat=True))
    existing = dict(DocumentSplit.objects.filter(kb=kb).values_list("document_id", "split"))
    splits = split_documents(doc_ids, seed=seed, eval_share=eval_share, existing=existing)
    new = [
        DocumentSplit(kb=kb, document_id=d, split=s) for d, s in splits.items() if d not in existing
    ]
    DocumentSplit.objects.bulk_create(new, ignore_conflicts=True)
    return {int(k): v for k, v in splits.items()}  # type: ignore[arg-type]
