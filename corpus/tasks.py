"""Huey tasks: take ids, re-fetch, call a service."""

from __future__ import annotations

from huey.contrib.djhuey import db_task


@db_task(retries=0)
def document_ingest_task(document_id: int) -> None:
    from corpus.models import Document
    from corpus.services import document_ingest

    if Document.objects.filter(pk=document_id).exists():
        document_ingest(document_id=document_id)
