"""The corpus app's only Huey module: Huey's autodiscovery imports ``<app>.tasks``, so every task
and periodic task of the app lives here (a task defined elsewhere is never registered with the
worker). Tasks take ids, re-fetch, and call the worker-side code, which never enqueues."""

from __future__ import annotations

import logging
from typing import Any

from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task, db_task
from huey.contrib.djhuey import signal as huey_signal
from huey.signals import SIGNAL_INTERRUPTED

from corpus.generation.runner import generation_job_run, generation_runs_stop
from corpus.generation.selectors import generation_jobs_stale
from corpus.knowledge.ingestion import document_ingest, document_ingests_stop, document_requeue
from corpus.knowledge.selectors import documents_stale
from corpus.models import Document, GenerationJob

log = logging.getLogger(__name__)

# Longest queue that document_ingests_waiting reads; beyond it, queued documents are not judged.
WAITING_SCAN_LIMIT = 20_000


@db_task(retries=0)
def document_ingest_task(document_id: int) -> None:
    if Document.objects.filter(pk=document_id).exists():
        document_ingest(document_id=document_id)


def document_ingests_waiting(*, limit: int = WAITING_SCAN_LIMIT) -> set[int] | None:
    """Ids of documents whose ingest task waits in the Huey queue or schedule; None when the
    queue is longer than ``limit`` or cannot be read (then nobody can tell a lost task from a
    waiting one). Messages are decoded without the task registry, so tasks of apps this process
    has not imported are simply skipped."""
    return _waiting_ids(document_ingest_task, limit=limit)


def generation_jobs_waiting(*, limit: int = WAITING_SCAN_LIMIT) -> set[int] | None:
    """Ids of generation jobs whose task waits in the Huey queue or schedule (as above)."""
    return _waiting_ids(generation_job_task, limit=limit)


def _waiting_ids(task: Any, *, limit: int) -> set[int] | None:
    task_class = task.task_class
    name = f"{task_class.__module__}.{task_class.__name__}"  # how Huey's registry names it
    try:
        storage = HUEY.storage
        if storage.queue_size() + storage.schedule_size() > limit:
            return None
        ids: set[int] = set()
        for data in [*storage.enqueued_items(limit), *storage.scheduled_items(limit)]:
            message = HUEY.serializer.deserialize(data)
            if message.name == name and message.args:
                ids.add(int(message.args[0]))
        return ids
    except Exception:  # noqa: BLE001 - an unreadable queue means "cannot tell", not an error
        log.warning("cannot read the task queue", exc_info=True)
        return None


@db_periodic_task(crontab())
def documents_resume_stale() -> None:
    """A worker killed mid-ingest leaves its documents parsing/embedding with an old heartbeat,
    and one killed between taking a task and claiming its document (or one that handed it back
    on SIGTERM) leaves it queued with no task: queue them again here, every minute.

    The requeue is a conditional update (a document claimed meanwhile is left alone), and
    ingestion claims the document, so a worker that is in fact still alive keeps it alone."""
    for document_id in documents_stale(waiting=document_ingests_waiting):
        if document_requeue(document_id=document_id):
            log.info("resuming the ingestion of document %s (its worker is gone)", document_id)
            document_ingest_task(document_id)


@db_task(retries=0)
def generation_job_task(job_id: int) -> None:
    if GenerationJob.objects.filter(pk=job_id).exists():
        generation_job_run(job_id=job_id)


@db_periodic_task(crontab(minute="*/2"))
def generation_jobs_resume_stale() -> None:
    """A worker killed mid-job leaves it 'running' with an old heartbeat, and a queue that
    lost its task (Redis restarted without persistence) leaves it 'queued': run it again here.

    The runner claims a job with a conditional update, so if the original worker is in fact
    still alive, only one of the two runs it."""
    for job_id in generation_jobs_stale(waiting=generation_jobs_waiting):
        generation_job_task(job_id)


@huey_signal(SIGNAL_INTERRUPTED)
def _worker_stopping(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:
    """``run_huey`` got SIGTERM (its "stop now" signal) with tasks running: the consumer is
    about to exit, and its worker threads (daemons) die with it. Before that, ask the generation
    runs to hand their jobs back - finished chunks saved, the job resumable at once - and the
    ingestions their documents - the current embedding round finished, the document queued
    again - and wait for them, a few seconds at most (``serve`` sends SIGKILL 10 s after
    SIGTERM). Called on the consumer's main thread, once per interrupted task; later calls
    return at once."""
    if isinstance(task, document_ingest_task.task_class):
        document_ingests_stop()
    if isinstance(task, generation_job_task.task_class):
        generation_runs_stop()
