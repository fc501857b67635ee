from __future__ import annotations

import pytest

from raftweb.retrieval import reciprocal_rank_fusion


def test_it_fuses_by_reciprocal_rank() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["d"] == pytest.approx(1 / 63)
    assert [x for x, _ in fused] == ["a", "c", "b", "d"]


def test_it_weights_lists_and_ignores_duplicates() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "a", "b"], ["b"]], k=1, weights=[1.0, 3.0]))
    assert fused == {"a": pytest.approx(0.5), "b": pytest.approx(1 / 4 + 3 / 2)}
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], weights=[1.0, 2.0])
