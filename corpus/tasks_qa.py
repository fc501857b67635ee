"""Huey tasks for RAFT generation: take ids, re-fetch, call a service."""

from __future__ import annotations

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task


@db_task(retries=0)
def generation_job_task(job_id: int) -> None:
    from corpus.models.qa import GenerationJob
    from corpus.services_qa import generation_job_run

    if GenerationJob.objects.filter(pk=job_id).exists():
        generation_job_run(job_id=job_id)


@db_periodic_task(crontab(minute="*/2"))
def generation_jobs_resume_stale() -> None:
    """A worker killed mid-job leaves it 'running' with an old heartbeat: resume it."""
    from corpus.models.qa import GenerationJob
    from corpus.services_qa import generation_job_resume, job_is_stale

    for job in GenerationJob.objects.filter(status__in=GenerationJob.ACTIVE):
        if job_is_stale(job):
            generation_job_resume(job=job)
