"""Reads for knowledge bases: visibility and listings."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from corpus.models import Chunk, Document, KnowledgeBase
from raftweb.core.roles import Role, user_has_role, user_roles


def kbs_visible_to(user: Any) -> QuerySet[KnowledgeBase]:
    """KBs a user may search/chat: admins see all; other roles see open KBs (no groups) and KBs
    restricted to a group they belong to; users without a role see none."""
    if not user_roles(user):
        return KnowledgeBase.objects.none()
    if user_has_role(user, Role.ADMIN):
        return KnowledgeBase.objects.all()
    return KnowledgeBase.objects.filter(
        Q(allowed_groups__isnull=True) | Q(allowed_groups__in=user.groups.all())
    ).distinct()


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
