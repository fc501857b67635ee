"""Reads for the review workspace."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet

from corpus.dataset.services import PairFilter
from corpus.knowledge.selectors import kbs_visible_to
from corpus.models import KnowledgeBase, QAPair, ReviewEvent

SORTS: dict[str, tuple[Any, ...]] = {
    "id": ("id",),
    "-id": ("-id",),
    # Unscored pairs sort last either way, on every database.
    "score": (F("judge_score").asc(nulls_last=True), "id"),
    "-score": (F("judge_score").desc(nulls_last=True), "id"),
    "updated": ("-updated_at", "-id"),
}


def review_kbs(user: Any) -> QuerySet[KnowledgeBase]:
    return kbs_visible_to(user).order_by("name")


def review_queue(*, kb: KnowledgeBase, filters: PairFilter, sort: str = "id") -> QuerySet[QAPair]:
    qs = filters.apply(QAPair.objects.filter(kb=kb)).select_related("document")
    return qs.order_by(*SORTS.get(sort, SORTS["id"]))


def next_pair(*, pair: QAPair, filters: PairFilter, sort: str = "id") -> QAPair | None:
    """The pair after ``pair`` in the filtered queue (for approve-and-next)."""
    ids = list(
        review_queue(kb=pair.kb, filters=filters, sort=sort).values_list("pk", flat=True)[:5000]
    )
    if pair.pk in ids:
        i = ids.index(pair.pk)
        rest = ids[i + 1 :]
    else:
        rest = [x for x in ids if x > pair.pk] if sort == "id" else ids
    return QAPair.objects.filter(pk=rest[0]).first() if rest else None


def pair_events(pair: QAPair) -> QuerySet[ReviewEvent]:
    return pair.events.select_related("user").order_by("-created_at", "-id")


def kb_events(kb: KnowledgeBase) -> QuerySet[ReviewEvent]:
    return (
        ReviewEvent.objects.filter(pair__kb=kb)
        .select_related("user", "pair")
        .order_by("-created_at", "-id")
    )
