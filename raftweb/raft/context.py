"""Context assembly for a RAFT row: the oracle with probability ``p``, distractors (a share of
retrieved hard negatives, the rest random, never near-duplicates of the oracle), shuffled with
a seeded RNG; oracle position kept; refusal rows when the oracle is absent."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rapidfuzz import fuzz

K = TypeVar("K", bound=Hashable)
NEAR_DUPLICATE_RATIO = 90.0


@dataclass(frozen=True, slots=True)
class ContextPlan(Generic[K]):
    chunk_ids: list[K]
    oracle_index: int | None
    refusal: bool
    hard_negatives: int

    @property
    def has_oracle(self) -> bool:
        return self.oracle_index is not None


def row_rng(seed: int | str, *parts: object) -> random.Random:
    """An RNG that depends only on the job seed and the row's identity, so a resumed or
    concurrent job assembles exactly the same context as an uninterrupted one."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def is_near_duplicate(a: str, b: str, *, ratio: float = NEAR_DUPLICATE_RATIO) -> bool:
    if not a or not b:
        return False
    return fuzz.ratio(a.casefold(), b.casefold()) >= ratio


def assemble_context(
    *,
    oracle_id: K,
    oracle_text: str,
    hard_negatives: Sequence[K],
    pool: Sequence[K],
    text_of: Callable[[K], str],
    num_distractors: int,
    p: float,
    hard_share: float,
    refusal_share: float,
    rng: random.Random,
) -> ContextPlan[K]:
    """Pick the row's documents.

    The context always holds ``num_distractors + 1`` documents when enough chunks exist (as in
    the reference script, an absent oracle is replaced by one more distractor). ``refusal`` is
    set on a share of the rows without the oracle; their answer must say the context lacks it.
    """
    include_oracle = rng.random() < p
    want = max(0, num_distractors) + (0 if include_oracle else 1)
    n_hard = min(want, round(want * max(0.0, min(1.0, hard_share))))
    chosen: list[K] = []
    excluded: set[K] = {oracle_id}

    def acceptable(cid: K) -> bool:
        if cid in excluded:
            return False
        excluded.add(cid)
        return not is_near_duplicate(text_of(cid), oracle_text)

    for cid in hard_negatives:
        if len(chosen) >= n_hard:
            break
        if acceptable(cid):
            chosen.append(cid)
    hard_count = len(chosen)
    # Sample a small window instead of shuffling the whole pool (KBs can hold 100k chunks);
    # fall back to the full pool only when the window runs out of acceptable chunks.
    window = min(len(pool), (want - len(chosen)) * 4 + 8)
    candidates = rng.sample(list(pool), window) if window < len(pool) else list(pool)
    if window >= len(pool):
        rng.shuffle(candidates)
    for cid in candidates:
        if len(chosen) >= want:
            break
        if acceptable(cid):
            chosen.append(cid)
    if len(chosen) < want and window < len(pool):
        rest = [c for c in pool if c not in excluded]
        rng.shuffle(rest)
        for cid in rest:
            if len(chosen) >= want:
                break
            if acceptable(cid):
                chosen.append(cid)
    docs: list[K] = list(chosen)
    if include_oracle:
        docs.append(oracle_id)
    rng.shuffle(docs)
    oracle_index = docs.index(oracle_id) if include_oracle else None
    refusal = (not include_oracle) and rng.random() < refusal_share
    return ContextPlan(docs, oracle_index, refusal, hard_count)
