"""The evaluation app's only Huey module (Huey's autodiscovery imports ``<app>.tasks``).
Tasks take ids, re-fetch, and call the worker side (:mod:`evaluation.runner`)."""

from __future__ import annotations

from typing import Any

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task
from huey.contrib.djhuey import signal as huey_signal
from huey.signals import SIGNAL_INTERRUPTED

from evaluation.models import EvalRun
from evaluation.runner import eval_run_execute, eval_runs_stop
from evaluation.selectors import eval_runs_stale


@db_task(retries=0)
def eval_run_task(run_id: int) -> None:
    if EvalRun.objects.filter(pk=run_id).exists():
        eval_run_execute(run_id=run_id)


@db_periodic_task(crontab(minute="*"))
def eval_runs_resume_stale() -> None:
    """A worker killed mid-run (or one that handed its run back on shutdown) leaves it running
    with an old or no heartbeat: run it again here. The claim lets exactly one worker through,
    and only pending results are answered."""
    for run_id in eval_runs_stale():
        eval_run_task(run_id)


@huey_signal(SIGNAL_INTERRUPTED)
def _worker_stopping(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:
    """``run_huey`` got SIGTERM with tasks running: hand the runs back after their current
    question (saved), so the next worker resumes at once."""
    if isinstance(task, eval_run_task.task_class):
        eval_runs_stop()
