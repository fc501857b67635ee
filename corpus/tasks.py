"""The corpus app's only Huey module: Huey's autodiscovery imports ``<app>.tasks``, so every task
and periodic task of the app lives here (a task defined elsewhere is never registered with the
worker). Tasks take ids, re-fetch, and call the worker-side code, which never enqueues."""

from __future__ import annotations

from typing import Any

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task
from huey.contrib.djhuey import signal as huey_signal
from huey.signals import SIGNAL_INTERRUPTED

from corpus.generation.runner import generation_job_run, generation_runs_stop
from corpus.generation.selectors import generation_jobs_stale
from corpus.knowledge.ingestion import document_ingest
from corpus.models import Document, GenerationJob


@db_task(retries=0)
def document_ingest_task(document_id: int) -> None:
    if Document.objects.filter(pk=document_id).exists():
        document_ingest(document_id=document_id)


@db_task(retries=0)
def generation_job_task(job_id: int) -> None:
    if GenerationJob.objects.filter(pk=job_id).exists():
        generation_job_run(job_id=job_id)


@db_periodic_task(crontab(minute="*/2"))
def generation_jobs_resume_stale() -> None:
    """A worker killed mid-job leaves it 'running' with an old heartbeat: run it again here.

    The runner claims a job with a conditional update, so if the original worker is in fact
    still alive, only one of the two runs it."""
    for job_id in generation_jobs_stale():
        generation_job_task(job_id)


@huey_signal(SIGNAL_INTERRUPTED)
def _worker_stopping(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:
    """``run_huey`` got SIGTERM (its "stop now" signal) with tasks running: the consumer is
    about to exit, and its worker threads (daemons) die with it. Before that, ask the generation
    runs to hand their jobs back - finished chunks saved, the job resumable at once - and wait
    for them, a few seconds at most (``serve`` sends SIGKILL 10 s after SIGTERM). Called on the
    consumer's main thread, once per interrupted task; later calls return at once."""
    if isinstance(task, generation_job_task.task_class):
        generation_runs_stop()
