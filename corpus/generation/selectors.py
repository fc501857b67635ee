"""Reads for the generation pages."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from corpus.models import GenerationJob, KnowledgeBase


def kb_jobs(kb: KnowledgeBase | None = None) -> QuerySet[GenerationJob]:
    qs = GenerationJob.objects.select_related("kb", "created_by")
    return qs.filter(kb=kb) if kb is not None else qs


# A job whose worker has not reported for this long is taken to be dead (killed or crashed).
STALE_AFTER = timedelta(minutes=2)
ACTIVE_STATES = (GenerationJob.Status.RUNNING, GenerationJob.Status.CANCELLING)


def job_is_stale(job: GenerationJob) -> bool:
    """Running, but its worker has not reported for a while (killed or crashed)."""
    if job.status not in (GenerationJob.Status.RUNNING, GenerationJob.Status.CANCELLING):
        return False
    return job.heartbeat_at is None or timezone.now() - job.heartbeat_at > STALE_AFTER


def generation_jobs_stale() -> list[int]:
    """Ids of jobs left 'running' or 'cancelling' by a worker that stopped reporting."""
    cutoff = timezone.now() - STALE_AFTER
    return list(
        GenerationJob.objects.filter(status__in=ACTIVE_STATES)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
        .values_list("pk", flat=True)
    )
