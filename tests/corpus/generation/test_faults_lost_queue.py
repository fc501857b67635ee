"""Fault: the queue loses a generation job's task (Redis restarted without persistence before a
worker took it, or a worker died between taking the task and claiming the job). The job would
stay 'queued' forever; the periodic sweep sees that no task waits for it and queues it again,
and it finishes with exactly its rows. A job whose task does wait is left alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from corpus import tasks
from corpus.generation.selectors import QUEUED_GRACE, generation_jobs_stale
from corpus.generation.services import generation_job_create
from corpus.models import GenerationJob, QAPair

pytestmark = pytest.mark.django_db

FAST = {"questions_per_chunk": 2, "hard_negative_share": 0.0, "num_distractors": 2, "seed": 3}


def _queued_long_ago(kb: Any) -> GenerationJob:
    job = generation_job_create(kb=kb, config=FAST, enqueue=False)  # its task: never queued
    GenerationJob.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - QUEUED_GRACE - timedelta(seconds=5)
    )
    return job


@pytest.fixture
def real_queue() -> Iterator[Any]:
    """The configured Huey storage (SQLite in the data dir) instead of immediate mode."""
    HUEY.immediate = False
    HUEY.flush()
    try:
        yield HUEY
    finally:
        HUEY.flush()
        HUEY.immediate = True


def test_it_tells_a_lost_task_from_a_waiting_one(manual_kb: Any, real_queue: Any) -> None:
    lost = _queued_long_ago(manual_kb)
    waiting = _queued_long_ago(manual_kb)
    fresh = generation_job_create(kb=manual_kb, config=FAST, enqueue=False)
    tasks.generation_job_task(waiting.pk)  # sits in the real queue (no worker here)
    assert tasks.generation_jobs_waiting() == {waiting.pk}
    stale = generation_jobs_stale(waiting=tasks.generation_jobs_waiting)
    assert lost.pk in stale and waiting.pk not in stale and fresh.pk not in stale
    # A queue that cannot be read judges no queued job; the old rule alone judges none either.
    assert lost.pk not in generation_jobs_stale(waiting=lambda: None)
    assert lost.pk not in generation_jobs_stale()


def test_the_sweep_runs_a_job_whose_task_was_lost(manual_kb: Any, scripted_profiles: Any) -> None:
    scripted_profiles()
    job = _queued_long_ago(manual_kb)
    tasks.generation_jobs_resume_stale.call_local()  # the periodic task's body (immediate mode)
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.FINISHED, job.error
    pairs = QAPair.objects.filter(job=job)
    assert pairs.count() == job.rows == 12
    assert pairs.values("oracle_chunk_id", "question_index").distinct().count() == 12
    # Swept again: a finished job is not run twice.
    tasks.generation_jobs_resume_stale.call_local()
    assert QAPair.objects.filter(job=job).count() == 12
