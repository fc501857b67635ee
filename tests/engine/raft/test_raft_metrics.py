from __future__ import annotations

import pytest

from raftweb.metrics import (
    best_threshold,
    cohen_kappa,
    confusion,
    exact_match,
    mrr,
    recall_at_k,
    rouge_l,
    token_f1,
)


def test_it_computes_retrieval_metrics() -> None:
    assert recall_at_k(["a", "b", "c"], {"c"}, 2) == 0.0
    assert recall_at_k(["a", "b", "c"], {"c", "z"}, 3) == 1.0
    assert mrr(["a", "b", "c"], {"b"}) == 0.5 and mrr(["a"], {"z"}) == 0.0


def test_it_computes_answer_metrics() -> None:
    assert exact_match("The Side key.", "side key") == 1.0
    assert token_f1("press the side key", "side key") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    # LCS of "a b c d e" and "a c e" is 3: P=3/5, R=1 → F=0.75
    assert rouge_l("a b c d e", "a c e") == pytest.approx(0.75)
    assert rouge_l("", "x") == 0.0


def test_it_computes_agreement_and_the_best_threshold() -> None:
    human = [True, True, False, False, True, False]
    judge = [True, True, False, True, True, False]
    assert cohen_kappa(human, judge) == pytest.approx(2 / 3)
    assert cohen_kappa([], []) is None and cohen_kappa([1, 1], [1, 1]) is None
    assert confusion(human, judge, [True, False]) == [[3, 0], [1, 2]]
    scores = [5, 4, 2, 3, 4, 1]
    choice = best_threshold(scores, human)
    assert choice is not None and choice.threshold == 4 and choice.agreement == 1.0
    assert best_threshold([], []) is None
