"""Reads for the generation pages."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import timedelta

from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from corpus.models import GenerationJob, KnowledgeBase


def kb_jobs(kb: KnowledgeBase | None = None) -> QuerySet[GenerationJob]:
    qs = GenerationJob.objects.select_related("kb", "created_by")
    return qs.filter(kb=kb) if kb is not None else qs


# A job whose worker has not reported for this long is taken to be dead (killed or crashed).
STALE_AFTER = timedelta(minutes=2)
ACTIVE_STATES = (GenerationJob.Status.RUNNING, GenerationJob.Status.CANCELLING)
# A queued job whose task is not in the queue after this long has lost it.
QUEUED_GRACE = timedelta(minutes=1)


def job_is_stale(job: GenerationJob) -> bool:
    """Running, but its worker has not reported for a while (killed or crashed)."""
    if job.status not in (GenerationJob.Status.RUNNING, GenerationJob.Status.CANCELLING):
        return False
    return job.heartbeat_at is None or timezone.now() - job.heartbeat_at > STALE_AFTER


def generation_jobs_stale(
    *, waiting: Callable[[], Collection[int] | None] | None = None
) -> list[int]:
    """Ids of jobs that no worker will finish:

    * left 'running' or 'cancelling' by a worker that stopped reporting;
    * with ``waiting`` (ids of jobs whose task sits in the Huey queue; None when the queue
      cannot be read): queued for over ``QUEUED_GRACE`` with no task waiting for them. The
      queue lost the task — Redis restarted without persistence, or a worker died between
      taking the task and claiming the job — and the job would stay queued forever. Running
      such a job twice is harmless: the runner claims it with a conditional update."""
    now = timezone.now()
    cutoff = now - STALE_AFTER
    stale = list(
        GenerationJob.objects.filter(status__in=ACTIVE_STATES)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
        .values_list("pk", flat=True)
    )
    if waiting is None:
        return stale
    queued = list(
        GenerationJob.objects.filter(status=GenerationJob.Status.QUEUED)
        .annotate(since=Coalesce("heartbeat_at", "created_at"))
        .filter(since__lt=now - QUEUED_GRACE)
        .order_by("pk")
        .values_list("pk", flat=True)[:500]
    )
    if queued:
        pending = waiting()
        if pending is not None:
            stale += [pk for pk in queued if pk not in pending]
    return stale
