"""The training app's only Huey module (Huey's autodiscovery imports ``<app>.tasks``): every
task and periodic task of the app lives here. Tasks take ids, re-fetch, and call the worker
side (:mod:`training.runner`), which never enqueues.

A training task holds one worker thread for the whole run (it watches the training
subprocess): size ``RAFTWEB_WORKERS`` for the runs you want beside ingestion and generation.
"""

from __future__ import annotations

from typing import Any

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task
from huey.contrib.djhuey import signal as huey_signal
from huey.signals import SIGNAL_INTERRUPTED

from training.models import ModelVersion, TrainingRun
from training.runner import (
    embedding_version_activate_run,
    model_version_merge_run,
    training_run_execute,
    training_runs_stop,
)
from training.selectors import next_queued_run, training_runs_stale, training_runs_waiting


@db_task(retries=0)
def training_run_task(run_id: int) -> None:
    run = training_run_execute(run_id=run_id)
    if run is not None and run.status in TrainingRun.FINISHED:
        # This KB's next queued run may start now (runs of one KB train one after the other).
        following = next_queued_run(kb_id=run.kb_id)
        if following is not None:
            training_run_task(following)


@db_periodic_task(crontab(minute="*"))
def training_runs_resume_stale() -> None:
    """A worker killed mid-run leaves it 'running' with an old heartbeat: claim it again here
    (its process is adopted if it still runs, or restarted from its newest checkpoint). Queued
    runs whose turn has come are started too. The claim lets exactly one worker through."""
    for run_id in [*training_runs_stale(), *training_runs_waiting()]:
        training_run_task(run_id)


@db_task(retries=0)
def embedding_version_activate_task(version_id: int) -> None:
    if ModelVersion.objects.filter(pk=version_id).exists():
        embedding_version_activate_run(version_id=version_id)


@db_task(retries=0)
def model_version_merge_task(version_id: int) -> None:
    if ModelVersion.objects.filter(pk=version_id).exists():
        model_version_merge_run(version_id=version_id)


@huey_signal(SIGNAL_INTERRUPTED)
def _worker_stopping(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:
    """``run_huey`` got SIGTERM with tasks running: hand the watched runs back at once (their
    training processes keep running, and the next worker adopts them)."""
    if isinstance(task, training_run_task.task_class):
        training_runs_stop()
