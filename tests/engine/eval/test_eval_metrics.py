"""Metrics against hand-worked values: recall@k, MRR, EM, token F1, ROUGE-L (rouge-score),
Cohen's kappa and multiple-choice accuracy."""

from __future__ import annotations

import pytest

from raftweb.eval.aggregate import aggregate, recall_curve
from raftweb.eval.mcq import chosen_index, correct_index, mcq_prompt
from raftweb.metrics import cohen_kappa, exact_match, mrr, recall_at_k, rouge_l, token_f1


def test_it_computes_recall_at_k_and_mrr_by_hand() -> None:
    ranked = ["d3", "d1", "d7", "d2"]
    assert recall_at_k(ranked, {"d1"}, 1) == 0.0
    assert recall_at_k(ranked, {"d1"}, 2) == 1.0
    assert recall_at_k(ranked, {"d9"}, 4) == 0.0
    # first gold at rank 3 -> 1/3
    assert mrr(ranked, {"d7", "d2"}) == pytest.approx(1 / 3)
    assert mrr(ranked, {"nope"}) == 0.0


def test_it_computes_exact_match_and_token_f1_by_hand() -> None:
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("Eiffel", "eiffel tower") == 0.0
    # pred {two, years, warranty} vs gold {two, years}: P=2/3, R=1 -> F1 = 0.8
    assert token_f1("two years warranty", "two years") == pytest.approx(0.8)
    assert token_f1("cats", "dogs") == 0.0


def test_it_computes_rouge_l_with_the_library_by_hand() -> None:
    # LCS("the cat sat on the mat", "the cat is on the mat") = the cat on the mat = 5
    # P = 5/6, R = 5/6 -> F = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS = 3 of pred 5 and gold 3: P = 0.6, R = 1 -> F = 0.75
    assert rouge_l("a b c d e", "a c e") == pytest.approx(0.75)
    assert rouge_l("", "anything") == 0.0


def test_it_computes_cohens_kappa_by_hand() -> None:
    # 10 items: both yes 4, both no 3, a yes/b no 2, a no/b yes 1.
    a = ["y"] * 4 + ["n"] * 3 + ["y"] * 2 + ["n"] * 1
    b = ["y"] * 4 + ["n"] * 3 + ["n"] * 2 + ["y"] * 1
    # po = 0.7; pa(y) = .6, pb(y) = .5 -> pe = .3 + .2 = .5; kappa = (.7-.5)/.5 = 0.4
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([], []) is None


def test_it_reads_multiple_choice_answers() -> None:
    options = ["Paris", "Lyon", "Nice"]
    assert correct_index("B", options) == 1
    assert correct_index(2, options) == 2
    assert correct_index("nice", options) == 2
    assert correct_index("Z", options) is None
    assert chosen_index("B", options) == 1
    assert chosen_index("(c) Nice.", options) == 2
    assert chosen_index("The answer is Lyon", options) == 1
    assert chosen_index("I cannot tell", options) is None
    assert "B. Lyon" in mcq_prompt("Where?", options)


def test_it_aggregates_mcq_accuracy_and_shares_by_hand() -> None:
    records = [
        {"parse_ok": True, "mcq_correct": True, "latency_ms": 100.0},
        {"parse_ok": True, "mcq_correct": False, "latency_ms": 300.0},
        {"parse_ok": False, "mcq_correct": True, "latency_ms": 200.0},
        {"parse_ok": None, "error": "model down"},
    ]
    metrics, counts = aggregate(records, k=5)
    assert metrics["mcq_accuracy"] == pytest.approx(0.6667)
    assert counts["mcq_accuracy"] == {"num": 2, "den": 3}
    assert metrics["parse_success"] == pytest.approx(0.6667)
    assert metrics["latency_p50_ms"] == 200.0
    assert counts["errors"] == 1 and counts["answered"] == 3


def test_it_leaves_metrics_null_with_a_reason_never_zero() -> None:
    records = [{"parse_ok": True, "exact_match": 1.0, "f1": 1.0, "rouge_l": 1.0}]
    metrics, counts = aggregate(records, k=3, judge_unavailable="connection refused")
    for key in ("judge_hard", "judge_soft"):
        assert metrics[key] is None
        assert "connection refused" in counts[key]["reason"]
    assert metrics["refusal_accuracy"] is None and "refusal" in counts["refusal_accuracy"]["reason"]
    assert metrics["recall@k"] is None and metrics["mrr"] is None
    assert metrics["mcq_accuracy"] is None
    assert metrics["exact_match"] == 1.0


def test_it_draws_the_recall_curve_from_ranks() -> None:
    # ranks 1, 3, missing, 2 over 4 questions
    assert recall_curve([1, 3, None, 2], 3) == [0.25, 0.5, 0.75]
    metrics, counts = aggregate(
        [
            {"oracle_retrieved": True, "gold_rank": 1},
            {"oracle_retrieved": True, "gold_rank": 2},
            {"oracle_retrieved": False, "gold_rank": None},
        ],
        k=2,
    )
    assert metrics["recall@k"] == pytest.approx(0.6667)
    assert metrics["mrr"] == pytest.approx(0.5)  # (1 + 1/2 + 0) / 3
