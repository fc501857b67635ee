"""Shared helpers for the RAFT management commands."""

from __future__ import annotations

from django.core.management.base import CommandError

from corpus.models import KnowledgeBase


def kb_or_error(slug: str) -> KnowledgeBase:
    kb = KnowledgeBase.objects.filter(slug=slug).first()
    if kb is None:
        raise CommandError(f"No knowledge base with slug {slug!r}.")
    return kb
