"""Reads for knowledge bases: visibility, listings, and ingestions whose worker is gone."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Set
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from corpus.models import Chunk, Document, KnowledgeBase
from raftweb.core.prepared import PreparedQuery
from raftweb.core.roles import Role, user_has_role, user_roles


def kbs_visible_to(user: Any) -> QuerySet[KnowledgeBase]:
    """KBs a user may search/chat: admins see all; other roles see open KBs (no groups) and KBs
    restricted to a group they belong to; users without a role see none."""
    if not user_roles(user):
        return KnowledgeBase.objects.none()
    if user_has_role(user, Role.ADMIN):
        return KnowledgeBase.objects.all()
    return _visible_to_member(user.pk)


def _visible_to_member(user_id: Any) -> QuerySet[KnowledgeBase]:
    # The same rule as kb_visible, in SQL.
    return KnowledgeBase.objects.filter(
        Q(allowed_groups__isnull=True) | Q(allowed_groups__in=Group.objects.filter(user=user_id))
    ).distinct()


_KB_FIELDS = [f.attname for f in KnowledgeBase._meta.concrete_fields]
# Every API call on a KB looks it up by slug: compiled once, not per request (see
# raftweb/core/prepared.py; the ORM's work was ~10x the query's under concurrent searches).
_KB_BY_SLUG = PreparedQuery(
    lambda slug: KnowledgeBase.objects.filter(slug=slug).values_list(*_KB_FIELDS)
)
_MEMBER_KB_BY_SLUG = PreparedQuery(
    lambda user_id, slug: _visible_to_member(user_id).filter(slug=slug).values_list(*_KB_FIELDS),
    kinds=(int, str),
)


def kb_visible_by_slug(user: Any, slug: str) -> KnowledgeBase | None:
    """``kbs_visible_to(user).filter(slug=slug).first()``, in one compiled query."""
    if not user_roles(user):
        return None
    if user_has_role(user, Role.ADMIN):
        rows = _KB_BY_SLUG.rows(slug)
    else:
        rows = _MEMBER_KB_BY_SLUG.rows(user.pk, slug)
    return KnowledgeBase.from_db("default", _KB_FIELDS, rows[0]) if rows else None


def kb_visible(*, admin: bool, user_group_ids: Set[int], kb_group_ids: Set[int]) -> bool:
    """:func:`kbs_visible_to`'s rule for one KB whose groups were read already, for a user
    with a role: admins see every KB, others open ones (no groups) and their groups' ones."""
    return admin or not kb_group_ids or bool(user_group_ids & kb_group_ids)


def kb_list_with_counts() -> QuerySet[KnowledgeBase]:
    return KnowledgeBase.objects.annotate(
        n_documents=Count("documents", distinct=True),
        n_in_progress=Count(
            "documents", filter=Q(documents__status__in=Document.IN_PROGRESS), distinct=True
        ),
        n_failed=Count(
            "documents", filter=Q(documents__status=Document.Status.FAILED), distinct=True
        ),
    )


def kb_documents(kb: KnowledgeBase) -> QuerySet[Document]:
    return kb.documents.order_by("name", "-version")


def kb_chunk_count(kb: KnowledgeBase) -> int:
    return Chunk.objects.filter(document__kb=kb).count()


def document_chunks(document: Document) -> QuerySet[Chunk]:
    return document.chunks.order_by("ordinal")


# --------------------------------------------------------------------------- stale ingestion
# A document's ``updated_at`` is its ingestion heartbeat: the worker's claim, the end of parsing
# and every embedding round write it (see corpus.knowledge.ingestion).
ACTIVE_STATES = (Document.Status.PARSING, Document.Status.EMBEDDING)

# A queued document whose ingest task is in neither the queue nor the schedule lost its task (a
# worker killed between taking the task and claiming the document, a hand-back on SIGTERM, a
# flushed queue). This grace only covers the moments between a commit and its enqueue, or a
# dequeue and the claim; misjudging one costs a duplicate task, which the claim turns away.
QUEUED_GRACE = timedelta(seconds=10)

# How many candidates one sweep looks at (the rest are found by the next one).
STALE_BATCH = 1000


def ingest_stale_after() -> timedelta:
    """Silence after which an ingestion is taken to be dead (RAFTWEB_INGEST_STALE_SECONDS)."""
    return timedelta(seconds=settings.INGEST_STALE_S)


def ingest_queued_grace() -> timedelta:
    return min(QUEUED_GRACE, ingest_stale_after())


def live_ingestion() -> Q:
    """Documents a worker is parsing or embedding right now: in progress, fresh heartbeat."""
    return Q(status__in=ACTIVE_STATES, updated_at__gte=timezone.now() - ingest_stale_after())


def document_is_live(document: Document) -> bool:
    return (
        document.status in ACTIVE_STATES
        and timezone.now() - document.updated_at < ingest_stale_after()
    )


def documents_stale(
    *,
    waiting: Callable[[], Collection[int] | None],
    ids: Iterable[int] | None = None,
    limit: int = STALE_BATCH,
) -> list[int]:
    """Ids of documents whose ingestion has no live worker and no task that will run it:

    * parsing or embedding, with no heartbeat for ``RAFTWEB_INGEST_STALE_SECONDS`` (the worker
      was killed mid-ingest; a live one writes one at least every embedding round);
    * queued for longer than a few seconds with no ingest task waiting for it (``waiting()``:
      ids of documents whose task sits in the Huey queue or schedule, None when the queue is too
      long to read; then no queued document is judged). A queued document behind a long backlog
      is never stale, however long it waits.

    ``waiting`` is called only when there is a queued candidate."""
    now = timezone.now()
    documents = Document.objects.all() if ids is None else Document.objects.filter(pk__in=ids)
    stalled = list(
        documents.filter(status__in=ACTIVE_STATES, updated_at__lt=now - ingest_stale_after())
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    queued = list(
        documents.filter(status=Document.Status.QUEUED, updated_at__lt=now - ingest_queued_grace())
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    if queued:
        pending = waiting()
        queued = [] if pending is None else [pk for pk in queued if pk not in pending]
    return sorted(stalled + queued)
