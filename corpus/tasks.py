"""The corpus app's only Huey module: Huey's autodiscovery imports ``<app>.tasks``, so every task
and periodic task of the app lives here (a task defined elsewhere is never registered with the
worker). Tasks take ids, re-fetch, and call the worker-side code, which never enqueues."""

from __future__ import annotations

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from corpus.generation.runner import generation_job_run
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
