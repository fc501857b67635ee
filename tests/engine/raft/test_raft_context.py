from __future__ import annotations

import random
from collections import Counter

from raftweb.raft.context import assemble_context, row_rng

_WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()
# Distinct texts: each chunk is a different seeded permutation of words.
TEXTS = {i: " ".join(random.Random(i).sample(_WORDS * 3, 30)) for i in range(40)}
TEXTS[99] = TEXTS[0] + " ."  # a near-duplicate of the oracle


def _plan(seed: int, q: int, **kw):  # type: ignore[no-untyped-def]
    args = dict(
        oracle_id=0,
        oracle_text=TEXTS[0],
        hard_negatives=[99, 5, 6, 7, 8],
        pool=list(TEXTS),
        text_of=TEXTS.__getitem__,
        num_distractors=4,
        p=0.8,
        hard_share=0.5,
        refusal_share=0.5,
        rng=row_rng(seed, 0, q),
    )
    args.update(kw)
    return assemble_context(**args)


def test_it_keeps_the_oracle_position_and_excludes_near_duplicates() -> None:
    for q in range(50):
        plan = _plan(1, q)
        assert len(plan.chunk_ids) == 5 and len(set(plan.chunk_ids)) == 5
        assert 99 not in plan.chunk_ids
        if plan.oracle_index is not None:
            assert plan.chunk_ids[plan.oracle_index] == 0
            assert not plan.refusal
        else:
            assert 0 not in plan.chunk_ids
        assert plan.hard_negatives == 2
        assert {5, 6} <= set(plan.chunk_ids)


def test_it_is_deterministic_from_the_seed_and_follows_p() -> None:
    assert [_plan(7, q) for q in range(20)] == [_plan(7, q) for q in range(20)]
    plans = [_plan(3, q) for q in range(400)]
    share = sum(p.has_oracle for p in plans) / len(plans)
    assert 0.74 < share < 0.86
    absent = [p for p in plans if not p.has_oracle]
    assert 0.3 < sum(p.refusal for p in absent) / len(absent) < 0.7
    positions = Counter(p.oracle_index for p in plans if p.has_oracle)
    assert len(positions) == 5  # shuffled: the oracle appears in every slot


def test_it_copes_with_a_tiny_corpus() -> None:
    plan = _plan(1, 0, pool=[0, 1], hard_negatives=[], p=1.0)
    assert sorted(plan.chunk_ids) == [0, 1] and plan.chunk_ids[plan.oracle_index] == 0
