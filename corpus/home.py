"""What the corpus app puts on the home page (see raftweb/core/home.py): admins see their
knowledge bases with counts, running generation jobs and what needs attention; reviewers see
their queue per knowledge base."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from corpus.dataset.selectors import review_kbs
from corpus.generation.selectors import job_is_stale
from corpus.models import Chunk, Document, GenerationJob, KnowledgeBase, QAPair
from raftweb.core.home import home_section
from raftweb.core.roles import Role, user_roles

# The home page is an overview: the full lists are one click away.
MAX_KBS = 12
MAX_JOBS = 5
# Failed jobs older than this were seen (or given up on) already.
RECENT_FAILURES = timedelta(days=7)


def _per_kb(rows: Any, key: str = "kb") -> Counter[int]:
    return Counter({row[key]: row["n"] for row in rows})


def _pair_counts(kb_ids: list[int]) -> dict[str, Counter[int]]:
    counts: dict[str, Counter[int]] = {s: Counter() for s in QAPair.Status.values}
    rows = QAPair.objects.filter(kb_id__in=kb_ids).values("kb", "status").annotate(n=Count("id"))
    for row in rows:
        counts[row["status"]][row["kb"]] = row["n"]
    return counts


@home_section("corpus.kbs", roles=(Role.ADMIN,), template="core/home/kbs.html", order=10)
def admin_kbs(user: Any) -> dict[str, Any]:
    kbs = list(KnowledgeBase.objects.order_by("name")[:MAX_KBS])
    ids = [kb.pk for kb in kbs]
    documents = _per_kb(Document.objects.filter(kb_id__in=ids).values("kb").annotate(n=Count("id")))
    failed = _per_kb(
        Document.objects.filter(kb_id__in=ids, status=Document.Status.FAILED)
        .values("kb")
        .annotate(n=Count("id"))
    )
    busy = _per_kb(
        Document.objects.filter(kb_id__in=ids, status__in=Document.IN_PROGRESS)
        .values("kb")
        .annotate(n=Count("id"))
    )
    chunks = _per_kb(
        Chunk.objects.filter(document__kb_id__in=ids)
        .values("document__kb")
        .annotate(n=Count("id")),
        key="document__kb",
    )
    pairs = _pair_counts(ids)
    rows = [
        {
            "kb": kb,
            "documents": documents[kb.pk],
            "chunks": chunks[kb.pk],
            "pairs": sum(pairs[s][kb.pk] for s in pairs),
            "pending": pairs[QAPair.Status.PENDING][kb.pk],
            "approved": pairs[QAPair.Status.APPROVED][kb.pk],
            "failed": failed[kb.pk],
            "in_progress": busy[kb.pk],
        }
        for kb in kbs
    ]
    return {"rows": rows, "more": KnowledgeBase.objects.count() > len(kbs)}


@home_section("corpus.jobs", roles=(Role.ADMIN,), template="core/home/jobs.html", order=20)
def admin_jobs(user: Any) -> dict[str, Any]:
    running = list(
        GenerationJob.objects.filter(status__in=GenerationJob.ACTIVE).select_related("kb")[
            :MAX_JOBS
        ]
    )
    attention: list[dict[str, Any]] = []
    for job in running:
        if job_is_stale(job):
            attention.append(
                {"text": f"Generation job {job.pk} has no live worker: resume it.", "job": job}
            )
    recent = timezone.now() - RECENT_FAILURES
    failed_jobs = GenerationJob.objects.filter(
        status=GenerationJob.Status.FAILED, created_at__gte=recent
    ).select_related("kb")
    for job in failed_jobs[:MAX_JOBS]:
        attention.append({"text": f"Generation job {job.pk} failed.", "job": job})
    failed_docs = (
        Document.objects.filter(status=Document.Status.FAILED)
        .values("kb__slug", "kb__name")
        .annotate(n=Count("id"))
        .order_by("kb__name")
    )
    return {"running": running, "attention": attention, "failed_docs": list(failed_docs)}


@home_section("corpus.review", roles=(Role.REVIEWER,), template="core/home/review.html", order=30)
def reviewer_queues(user: Any) -> dict[str, Any] | None:
    # Admins hold every role's rights but see their KBs (with the same counts) above.
    if Role.ADMIN in user_roles(user):
        return None
    kbs = list(review_kbs(user)[:MAX_KBS])
    pairs = _pair_counts([kb.pk for kb in kbs])
    rows = [
        {
            "kb": kb,
            "pending": pairs[QAPair.Status.PENDING][kb.pk],
            "approved": pairs[QAPair.Status.APPROVED][kb.pk],
            "rejected": pairs[QAPair.Status.REJECTED][kb.pk],
        }
        for kb in kbs
    ]
    return {"rows": rows, "pending_total": sum(r["pending"] for r in rows)}
