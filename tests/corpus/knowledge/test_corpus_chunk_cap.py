"""Chunks never exceed what the embedding model reads (issue 11), and the KB page says so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from corpus.knowledge.indexes import kb_chunk_token_cap, kb_embedder
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.services import document_upload, kb_create

pytestmark = pytest.mark.django_db

LONG = "\n\n".join(
    " ".join(f"Routine{p}x{i} turns the always-on display off at bedtime." for i in range(40))
    for p in range(3)
).encode()


def test_it_caps_ingested_chunks_at_the_models_input_and_says_so(
    alice: Any, client_for: Callable[[Any], Client]
) -> None:
    kb = kb_create(name="Manual", slug="manual", chunk_size=400, chunk_overlap=30)
    doc = document_upload(kb=kb, name="routines.txt", chunks=[LONG], enqueue=False).document
    document_ingest(document_id=doc.pk)
    embedder = kb_embedder(kb)
    tokenizer = embedder.model.tokenizer  # type: ignore[attr-defined]
    chunks = list(doc.chunks.order_by("ordinal"))
    assert len(chunks) > 3
    for chunk in chunks:
        # Title + text, special tokens included, as the model itself counts: nothing truncated.
        index_text = f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text
        assert len(tokenizer(index_text, truncation=False)["input_ids"]) <= embedder.max_seq_length
    assert kb_chunk_token_cap(kb) == embedder.max_input_tokens == 254

    page = client_for(alice).get(reverse("corpus:kb_detail", args=[kb.slug])).content.decode()
    assert "Chunks hold at most 254 tokens: what the embedding model reads" in page
    assert "the 400-token chunk size is capped to it" in page
