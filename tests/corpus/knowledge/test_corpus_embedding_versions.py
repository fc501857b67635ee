"""Embedding versions: a second model indexed beside the base one, selectable per search."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from corpus.knowledge.indexes import CorpusError, vector_store
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.search import kb_search
from corpus.knowledge.services import (
    document_upload,
    kb_create,
    kb_embedding_activate,
    kb_embedding_add,
)
from corpus.models import EmbeddingIndex
from raftweb.retrieval import collection_name

pytestmark = pytest.mark.django_db

DOCS = {
    "battery.txt": b"Battery\n\nCharge the battery with the USB-C cable; fast charging needs the 25 W adapter.",
    "gps.txt": b"Location\n\nTurn on location services so apps can use GPS and Wi-Fi to find you.",
}


def _ingest(kb: object, name: str, data: bytes) -> None:
    document_ingest(
        document_id=document_upload(kb=kb, name=name, chunks=[data], enqueue=False).document.pk
    )


def test_it_indexes_a_second_embedding_version_and_searches_it(tmp_path: Path) -> None:
    kb = kb_create(name="Manual", slug="manual")
    _ingest(kb, "battery.txt", DOCS["battery.txt"])
    # A "tuned" model: here the bundled model under another label (any id or local path works).
    index = kb_embedding_add(kb=kb, version="tuned-v1", model="all-MiniLM-L6-v2")
    assert index.status == EmbeddingIndex.Status.READY
    assert vector_store().count(collection_name(kb.index_key, "tuned-v1")) == 1
    # Documents ingested later are embedded into every ready version.
    _ingest(kb, "gps.txt", DOCS["gps.txt"])
    assert vector_store().count(collection_name(kb.index_key, "tuned-v1")) == 2
    hits = kb_search(kb=kb, query="turn on GPS", mode="dense", k=1, embedding_version="tuned-v1")
    assert hits[0].document_name == "gps.txt"
    assert kb.embedding_version == "base"
    kb_embedding_activate(kb=kb, version="tuned-v1")
    kb.refresh_from_db()
    assert kb.embedding_version == "tuned-v1"
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question": "fast charging adapter", "gold": ["battery"]}) + "\n"
    )
    for version in ("base", "active", "tuned-v1"):
        out = io.StringIO()
        call_command(
            "retrieval_eval",
            "manual",
            str(questions),
            "--embedding",
            version,
            "--mode",
            "dense",
            stdout=out,
        )
        assert json.loads(out.getvalue().splitlines()[-1])["recall@1"] == 1.0


def test_it_rejects_bad_versions() -> None:
    kb = kb_create(name="Manual")
    with pytest.raises(CorpusError, match="other than"):
        kb_embedding_add(kb=kb, version="base", model="all-MiniLM-L6-v2")
    with pytest.raises(CorpusError, match="no ready embedding version"):
        kb_embedding_activate(kb=kb, version="nope")
    with pytest.raises(CorpusError, match="cannot load embedding model"):
        kb_embedding_add(kb=kb, version="broken", model="/no/such/model")
    assert (
        EmbeddingIndex.objects.get(kb=kb, version="broken").status == EmbeddingIndex.Status.FAILED
    )


def test_it_lists_and_activates_versions_through_the_api_and_page(
    alice: object, client_for: object
) -> None:
    from django.urls import reverse

    kb = kb_create(name="Manual", slug="manual")
    _ingest(kb, "gps.txt", DOCS["gps.txt"])
    kb_embedding_add(kb=kb, version="tuned", model="all-MiniLM-L6-v2")
    c = client_for(alice)  # type: ignore[operator]
    versions = c.get("/api/kbs/manual/embeddings").json()
    assert [(v["version"], v["active"]) for v in versions] == [("base", True), ("tuned", False)]
    r = c.post("/api/kbs/manual/embeddings/tuned/activate")
    assert r.status_code == 200 and [v["active"] for v in r.json()] == [False, True]
    assert c.post("/api/kbs/manual/embeddings/nope/activate").status_code == 404
    page = c.get(reverse("corpus:kb_detail", args=["manual"])).content.decode()
    assert "tuned · active" in page and 'value="base"' in page
    r = c.post(reverse("corpus:kb_embedding_activate", args=["manual"]), {"version": "base"})
    assert r.status_code == 302
    kb.refresh_from_db()
    assert kb.embedding_version == "base"
