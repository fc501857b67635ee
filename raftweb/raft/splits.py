"""Deterministic train/eval split by document.

Whole documents go to one split, so no eval chunk is ever trained on. Assignment depends only
on the seed and the document keys; documents that already have a split keep it (a later job
must never move an eval document into training). A row (a Q&A pair) follows its documents:
:func:`row_split`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping

TRAIN = "train"
EVAL = "eval"
DEFAULT_EVAL_SHARE = 0.1


def _rank(seed: int | str, key: Hashable) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def eval_count(n_docs: int, eval_share: float = DEFAULT_EVAL_SHARE) -> int:
    """Documents to hold out: the share rounded, at least one, and never all of them when
    there is more than one (a single-document KB goes to eval so nothing leaks)."""
    if n_docs <= 0:
        return 0
    want = max(1, round(n_docs * max(0.0, min(1.0, eval_share))))
    return min(want, n_docs - 1) if n_docs > 1 else 1


def split_documents(
    doc_keys: Iterable[Hashable],
    *,
    seed: int | str = 0,
    eval_share: float = DEFAULT_EVAL_SHARE,
    existing: Mapping[Hashable, str] | None = None,
) -> dict[Hashable, str]:
    """Map every document key to ``"train"`` or ``"eval"``."""
    keys = list(dict.fromkeys(doc_keys))
    existing = {k: v for k, v in (existing or {}).items() if v in (TRAIN, EVAL)}
    out: dict[Hashable, str] = {k: existing[k] for k in keys if k in existing}
    target = eval_count(len(keys), eval_share)
    have_eval = sum(1 for v in out.values() if v == EVAL)
    fresh = sorted((k for k in keys if k not in out), key=lambda k: _rank(seed, k))
    need = max(0, target - have_eval)
    for i, key in enumerate(fresh):
        out[key] = EVAL if i < need else TRAIN
    return out


def row_split(doc_keys: Iterable[Hashable | None], doc_splits: Mapping[Hashable, str]) -> str:
    """The split of a row that shows the given documents: ``"eval"`` when any of them is an
    eval document (training on the row would train on it), else ``"train"``.

    Pass every document whose text the row carries (its oracle and its context). Keys are
    looked up as given and as strings; a document with no split yet counts as training, so
    callers should assign splits first (:func:`split_documents`) when a row may be the first
    to touch a document.
    """
    as_str = {str(k): v for k, v in doc_splits.items()}
    for key in doc_keys:
        if key is None:
            continue
        split = doc_splits.get(key, as_str.get(str(key)))
        if split == EVAL:
            return EVAL
    return TRAIN
