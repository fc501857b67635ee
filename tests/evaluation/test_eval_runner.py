"""The worker side: a killed worker's run resumes with only its pending answers (no question
answered twice), cancel stops after the current question, and only one worker claims a run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from evaluation import runner
from evaluation.models import EvalResult, EvalRun
from evaluation.runner import eval_run_claim, eval_run_execute
from evaluation.services import eval_run_cancel, eval_run_resume, eval_run_start
from raftweb.eval.configs import parse_configs

pytestmark = pytest.mark.django_db


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the runner catches it."""


@pytest.fixture
def hook() -> Iterator[None]:
    yield
    runner.after_result_saved = None


def _start(kb: Any) -> EvalRun:
    return eval_run_start(
        kb=kb,
        configs=parse_configs(["emb=base,gen=base", "emb=base,gen=base,mode=bm25"]),
        enqueue=False,
    )


def test_it_resumes_a_killed_run_without_answering_twice(
    eval_kb: Any, student_llm: Any, judge_scripted: Any, hook: None
) -> None:
    run = _start(eval_kb)
    assert run.total_units == 8
    saved: list[int] = []

    def die_after_three(r: EvalRun, result: EvalResult) -> None:
        saved.append(result.pk)
        if len(saved) == 3:
            raise Killed

    runner.after_result_saved = die_after_three
    with pytest.raises(Killed):
        eval_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "running" and run.done_units == 3
    # Its heartbeat is fresh: nobody else may take it yet.
    assert eval_run_claim(run_id=run.pk) is None
    runner.after_result_saved = None
    EvalRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    run = eval_run_execute(run_id=run.pk)
    assert run.status == "succeeded" and run.done_units == 8
    assert EvalResult.objects.filter(run=run, state="done").count() == 8
    # One model call per answer that had context (BM25 finds nothing for the refusal row).
    asked = EvalResult.objects.filter(run=run).exclude(outcome="no_context").count()
    assert len(student_llm.requests) == asked >= 6, "a question was answered twice"
    assert [c["counts"]["parse_success"]["den"] for c in run.summary] == [4, 4]


def test_it_cancels_after_the_current_question_and_resumes_the_rest(
    eval_kb: Any, student_llm: Any, judge_scripted: Any, hook: None
) -> None:
    run = _start(eval_kb)
    runner.after_result_saved = lambda r, result: eval_run_cancel(run=EvalRun.objects.get(pk=r.pk))
    run = eval_run_execute(run_id=run.pk)
    assert run.status == "cancelled" and run.done_units == 1
    assert run.summary and run.summary[0]["counts"]["answered"] == 1
    runner.after_result_saved = None
    run = eval_run_resume(run=run, enqueue=False)
    assert run.status == "queued" and not run.cancel_requested
    run = eval_run_execute(run_id=run.pk)
    assert run.status == "succeeded" and run.done_units == 8
    asked = EvalResult.objects.filter(run=run).exclude(outcome="no_context").count()
    assert len(student_llm.requests) == asked >= 6


def test_it_lets_exactly_one_worker_claim_a_run(eval_kb: Any, student_llm: Any) -> None:
    run = _start(eval_kb)
    assert eval_run_claim(run_id=run.pk) is not None
    assert eval_run_claim(run_id=run.pk) is None
    # The second worker backs off without touching it.
    assert eval_run_execute(run_id=run.pk).status == "running"
    assert not student_llm.requests


def test_it_hands_the_run_back_when_the_worker_stops_and_resumes_it(
    eval_kb: Any, student_llm: Any, judge_scripted: Any, hook: None
) -> None:
    from evaluation.selectors import eval_runs_stale

    run = _start(eval_kb)
    # SIGTERM to run_huey closes the gate (evaluation.tasks); the run stops between questions.
    runner.after_result_saved = lambda r, result: runner._gate.stop(timeout=0)
    try:
        run = eval_run_execute(run_id=run.pk)
    finally:
        runner._gate.reopen()
        runner.after_result_saved = None
    assert run.status == "running" and run.heartbeat_at is None and run.done_units == 1
    # The periodic stale-run task picks it up at once, and the next worker finishes it.
    assert run.pk in eval_runs_stale()
    run = eval_run_execute(run_id=run.pk)
    assert run.status == "succeeded" and run.done_units == 8
