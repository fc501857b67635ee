"""Generation services (request side): create, cancel and resume jobs. They enqueue; the worker
runs :mod:`corpus.generation.runner`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from corpus.dataset.services import QAError
from corpus.generation.selectors import job_is_stale
from corpus.models import (
    Chunk,
    Document,
    GenerationJob,
    GenerationUnit,
    KnowledgeBase,
)
from corpus.tasks import generation_job_task
from raftweb.core.audit import audit
from raftweb.raft.pipeline import (
    GenerationConfig,
)
from raftweb.typedconfig import ConfigError


def generation_job_create(
    *,
    kb: KnowledgeBase,
    user: Any = None,
    config: Mapping[str, Any] | None = None,
    enqueue: bool = True,
) -> GenerationJob:
    """Validate the config, pick the chunks, create one unit per chunk, enqueue the run."""
    try:
        cfg = GenerationConfig.from_dict(config)
    except ConfigError as exc:
        raise QAError(str(exc)) from None
    chunks = Chunk.objects.filter(document__kb=kb, document__status=Document.Status.READY)
    if cfg.document_ids:
        chunks = chunks.filter(document_id__in=cfg.document_ids)
    chunk_ids = list(chunks.order_by("document_id", "ordinal").values_list("pk", flat=True))
    if cfg.limit_chunks:
        chunk_ids = chunk_ids[: cfg.limit_chunks]
    if not chunk_ids:
        raise QAError(
            "This knowledge base has no ready chunks to generate from "
            "(upload documents and wait until they are ready).",
            code="empty",
        )
    with transaction.atomic():
        job = GenerationJob.objects.create(
            kb=kb,
            created_by=user if getattr(user, "pk", None) else None,
            config=cfg.to_dict(),
            seed=cfg.seed,
            chunks_total=len(chunk_ids),
        )
        GenerationUnit.objects.bulk_create(
            [GenerationUnit(job=job, chunk_id=c) for c in chunk_ids], batch_size=500
        )
        audit(user, "generation.start", job, chunks=len(chunk_ids))
        if enqueue:
            transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:

    generation_job_task(job_id)


def generation_job_cancel(*, job: GenerationJob) -> GenerationJob:
    if not job.is_active:
        raise QAError(f"job {job.pk} is already {job.status}", code="not_active", status=409)
    GenerationJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    # A queued job that never started is cancelled at once; a running one stops at its next poll.
    GenerationJob.objects.filter(pk=job.pk, status=GenerationJob.Status.QUEUED).update(
        status=GenerationJob.Status.CANCELLED, finished_at=timezone.now()
    )
    GenerationJob.objects.filter(pk=job.pk, status=GenerationJob.Status.RUNNING).update(
        status=GenerationJob.Status.CANCELLING
    )
    job.refresh_from_db()
    audit(None, "generation.cancel", job)
    return job


def generation_job_resume(*, job: GenerationJob, enqueue: bool = True) -> GenerationJob:
    """Re-run a job whose worker died or that ended with failed chunks: only units not done run."""
    if job.status in (GenerationJob.Status.CANCELLED,) and job.cancel_requested:
        GenerationJob.objects.filter(pk=job.pk).update(cancel_requested=False)
    if job.is_active and not job_is_stale(job) and job.status != GenerationJob.Status.QUEUED:
        raise QAError(f"job {job.pk} is still running", code="running", status=409)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=GenerationJob.Status.QUEUED, cancel_requested=False, finished_at=None, error=""
    )
    audit(None, "generation.resume", job)
    if enqueue:
        transaction.on_commit(lambda: _enqueue(job.pk))
    job.refresh_from_db()
    return job
