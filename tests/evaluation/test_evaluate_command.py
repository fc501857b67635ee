"""`manage.py evaluate`: the last line printed is the JSON contract; answers come from the
answering pipeline over real retrieval and a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError

from evaluation.models import EvalResult, EvalRun

pytestmark = pytest.mark.django_db

METRIC_KEYS = {
    "recall@k", "mrr", "parse_success", "correct_reference", "quote_faithfulness",
    "exact_match", "f1", "rouge_l", "judge_hard", "judge_soft", "refusal_accuracy",
    "mcq_accuracy", "latency_p50_ms", "tokens_per_s",
}  # fmt: skip


def test_it_evaluates_the_eval_split_and_prints_the_contract_last(
    eval_kb: Any, student_llm: Any, judge_scripted: Any, run_evaluate: Any
) -> None:
    report, text, _ = run_evaluate("tv", "--config", "emb=base,gen=base", "--wait", "--k", "3")
    run = EvalRun.objects.get()
    assert run.status == "succeeded"
    assert set(report) == {"run", "questions", "configs"}
    assert report["run"] == run.pk and report["questions"] == 4
    [config] = report["configs"]
    assert config["config"] == "emb=base,gen=base"
    metrics, counts = config["metrics"], config["counts"]
    assert set(metrics) == METRIC_KEYS
    # The scripted server always answers in RAFT format, quoting the first retrieved chunk.
    assert metrics["parse_success"] == 1.0 and counts["parse_success"] == {"num": 4, "den": 4}
    assert metrics["quote_faithfulness"] == 1.0
    assert metrics["recall@k"] is not None and counts["recall@k"]["den"] == 3
    # The eval split's pairs know their oracle chunk: whether it was retrieved is counted too.
    assert counts["oracle_chunk_retrieved"]["den"] == 3
    assert metrics["judge_hard"] == 1.0  # the scripted judge scores 4
    assert counts["judge_hard"] == {"num": 3, "den": 3}  # the refusal row is not judged
    assert metrics["refusal_accuracy"] == 1.0  # "REFUSE" makes the server refuse
    assert metrics["mcq_accuracy"] is None and counts["mcq_accuracy"]["reason"]
    assert metrics["latency_p50_ms"] > 0 and metrics["tokens_per_s"] > 0
    assert len(student_llm.requests) == 4
    assert judge_scripted.kinds() == ["judge"] * 3
    assert EvalResult.objects.filter(run=run, state="done").count() == 4


def test_it_refuses_a_missing_version_before_anything_runs(
    eval_kb: Any, student_llm: Any, run_evaluate: Any
) -> None:
    with pytest.raises(CommandError, match="no generator version 999"):
        run_evaluate("tv", "--config", "emb=base,gen=base", "--config", "gen=version:999")
    with pytest.raises(CommandError, match="no embedding version 998"):
        run_evaluate("tv", "--config", "emb=version:998,gen=base")
    with pytest.raises(CommandError, match="gen must be"):
        run_evaluate("tv", "--config", "emb=base,gen=tuned")
    assert not EvalRun.objects.exists() and not student_llm.requests


def test_it_refuses_an_empty_question_set(
    eval_kb: Any, student_llm: Any, run_evaluate: Any, tmp_path: Path
) -> None:
    from corpus.models import QAPair

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(CommandError, match="question set is empty"):
        run_evaluate("tv", "--questions", str(empty), "--config", "emb=base,gen=base")
    QAPair.objects.all().delete()
    with pytest.raises(CommandError, match="no approved eval-split pairs"):
        run_evaluate("tv", "--config", "emb=base,gen=base")
    assert not EvalRun.objects.exists()


def test_it_computes_the_rest_when_the_judge_is_down(
    eval_kb: Any, student_llm: Any, judge_down: Any, run_evaluate: Any
) -> None:
    report, _, err = run_evaluate("tv", "--config", "emb=base,gen=base", "--wait")
    [config] = report["configs"]
    metrics, counts = config["metrics"], config["counts"]
    assert EvalRun.objects.get().status == "succeeded"
    assert metrics["judge_hard"] is None and metrics["judge_soft"] is None
    assert counts["judge_hard"]["reason"].startswith("judge unavailable")
    assert metrics["parse_success"] == 1.0 and metrics["exact_match"] is not None
    assert "Judge unavailable" in err


def test_it_lists_gold_documents_not_in_the_kb_and_matches_original_names(
    eval_kb: Any, student_llm: Any, judge_scripted: Any, run_evaluate: Any, tmp_path: Path
) -> None:
    lines = [
        # stored as reset_1.txt: the original name must match
        {"question": "How do I reset the television?", "answer": "hold the power button",
         "gold": ["reset#1.txt"]},
        {"question": "What is the warranty?", "answer": "two years", "gold": ["nowhere.pdf"]},
        {"question": "Which option resets?", "options": ["Hold power", "Unplug"], "correct": "A"},
    ]  # fmt: skip
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report, _, err = run_evaluate(
        "tv", "--questions", str(path), "--config", "emb=base,gen=base", "--mode", "bm25", "--wait"
    )
    counts = report["configs"][0]["counts"]
    assert counts["gold_missing"] == ["nowhere.pdf"] and "nowhere.pdf" in err
    # only the question whose gold document exists is scored for retrieval (never a miss)
    assert counts["recall@k"]["den"] == 1 and report["configs"][0]["metrics"]["recall@k"] == 1.0
    assert counts["mcq_accuracy"]["den"] == 1
    assert report["questions"] == 3


def test_it_queues_without_wait(
    eval_kb: Any, student_llm: Any, run_evaluate: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        report, _, _ = run_evaluate("tv", "--config", "emb=base,gen=base", "--limit", "2")
    run = EvalRun.objects.get()
    assert run.status == "queued" and run.total_units == 2
    assert report["questions"] == 2 and report["configs"][0]["metrics"]["parse_success"] is None
    assert len(callbacks) == 1 and not student_llm.requests
