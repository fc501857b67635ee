"""`export_kb` / `import_kb`: a knowledge base moves to another installation whole — documents
with their original files, chunks, Q&A pairs with review history, prompt overrides, model
version metadata — and is searchable there. Checked by a round trip: export, import under a
new slug, compare; delete the original, import under its own slug again, compare."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from corpus.dataset.services import qa_pair_update
from corpus.generation.models import KBPromptOverrides
from corpus.knowledge.indexes import bm25_index, upload_root, vector_store
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.search import kb_search
from corpus.knowledge.services import document_upload, kb_create, kb_delete
from corpus.models import BASE_VERSION, Chunk, Document, KnowledgeBase, QAPair, ReviewEvent
from raftweb.core.models import AuditEvent
from raftweb.retrieval import collection_name
from training.models import ActiveModel, ModelVersion

pytestmark = pytest.mark.django_db

DOCS = {
    "battery.txt": b"Battery care\n\nCharge the battery with the USB-C cable. Fast charging "
    b"needs the 25 W adapter. Never leave the phone in a hot car.",
    "gps.md": "# Location\n\nTurn on location services so apps can use **GPS** and Wi-Fi to "
    "find you. Précision improves outdoors.".encode(),
}


def _run(*args: str) -> dict[str, Any]:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue().strip().splitlines()[-1])


def _source_kb(alice: Any, rita: Any) -> KnowledgeBase:
    vip = Group.objects.create(name="vip-portable")
    kb = kb_create(name="Phone manual", slug="phone", allowed_groups=[vip], user=alice)
    for name, data in DOCS.items():
        result = document_upload(kb=kb, name=name, chunks=[data], user=alice, enqueue=False)
        document_ingest(document_id=result.document.pk)
    battery = kb.documents.get(name="battery.txt")
    chunk = battery.chunks.order_by("ordinal").first()
    quote = "Fast charging needs the 25 W adapter."
    for i, (question, status) in enumerate(
        [("Which adapter for fast charging?", "approve"), ("Where to leave the phone?", "reject")]
    ):
        pair = QAPair.objects.create(
            kb=kb,
            document=battery,
            oracle_chunk=chunk,
            question=question,
            cot_answer=f"##begin_quote## {quote} ##end_quote## <ANSWER>: the 25 W adapter",
            final_answer="the 25 W adapter",
            context_chunk_ids=[chunk.pk, None],
            context_texts=[chunk.text, "A distractor from elsewhere."],
            context_titles=["Battery care", "Other"],
            oracle_index=0,
            oracle_text=chunk.text,
            question_index=i,
            judge_score=4,
            judge_reason="Grounded",
            origin={"id": f"ref-{i}", "type": "general"},
            notes=["imported from ref"],
        )
        qa_pair_update(pair_id=pair.pk, user=rita, version=pair.version, action=status)
    KBPromptOverrides.objects.create(kb=kb, overrides={"qa_system": "Write for phone owners."})
    version = ModelVersion.objects.create(
        kb=kb,
        kind="generator",
        label="lora-1",
        base_model="tiny",
        path="/models/lora-1",
        is_adapter=True,
        metrics={"loss": 0.5},
    )
    ActiveModel.objects.create(kb=kb, kind="generator", version=version)
    return kb


def _snapshot(kb: KnowledgeBase) -> dict[str, Any]:
    """Everything that must survive the move, without installation-specific ids."""
    docs = {}
    for d in kb.documents.order_by("name"):
        docs[d.name] = {
            "hash": d.content_hash,
            "status": d.status,
            "text": d.text,
            "kind": d.kind,
            "bytes": (upload_root() / d.file_path).read_bytes(),
            "chunks": list(
                d.chunks.order_by("ordinal").values_list("ordinal", "text", "start", "end", "hash")
            ),
        }
    text_of = dict(Chunk.objects.filter(document__kb=kb).values_list("pk", "text"))
    pairs = []
    for p in kb.qa_pairs.order_by("question"):
        pairs.append(
            {
                "question": p.question,
                "cot": p.cot_answer,
                "status": p.status,
                "reviewed_by": p.reviewed_by.username if p.reviewed_by else None,
                "oracle": text_of.get(p.oracle_chunk_id),
                "document": p.document.name if p.document else None,
                "contexts": [text_of.get(c) if c else None for c in p.context_chunk_ids],
                "context_texts": p.context_texts,
                "origin": p.origin,
                "events": list(
                    p.events.order_by("created_at", "pk").values_list(
                        "action", "user__username", "after"
                    )
                ),
            }
        )
    return {
        "kb": (
            kb.name,
            kb.chunk_size,
            kb.chunk_overlap,
            sorted(kb.allowed_groups.values_list("name", flat=True)),
        ),
        "documents": docs,
        "pairs": pairs,
        "overrides": KBPromptOverrides.objects.get(kb=kb).overrides,
        "versions": list(
            ModelVersion.objects.filter(kb=kb).values_list(
                "kind", "label", "path", "is_adapter", "metrics"
            )
        ),
    }


def _indexed(kb: KnowledgeBase) -> tuple[int, int, int]:
    chunks = Chunk.objects.filter(document__kb=kb).count()
    vectors = vector_store().count(collection_name(kb.index_key, BASE_VERSION))
    return chunks, vectors, bm25_index(kb).count()


def test_it_moves_a_knowledge_base_whole_and_searchable(
    alice: Any, rita: Any, tmp_path: Path
) -> None:
    source = _source_kb(alice, rita)
    before = _snapshot(source)
    chunks, vectors, postings = _indexed(source)
    assert chunks == vectors == postings >= 2
    out = tmp_path / "exports" / "phone.raftkb"
    exported = _run("export_kb", "phone", str(out))
    assert exported == {
        "exported": "phone",
        "file": str(out),
        "documents": 2,
        "files": 2,
        "chunks": Chunk.objects.filter(document__kb=source).count(),
        "pairs": 2,
        "review_events": 2,
        "model_versions": 1,
    }
    with zipfile.ZipFile(out) as archive:
        assert {"manifest.json", "documents.jsonl", "chunks.jsonl", "pairs.jsonl"} <= set(
            archive.namelist()
        )

    # 1. Beside the original, under another slug.
    imported = _run("import_kb", str(out), "--slug", "phone-copy")
    assert imported == {
        "imported": "phone-copy",
        "documents": 2,
        "chunks": exported["chunks"],
        "pairs": 2,
        "review_events": 2,
        "model_versions": 1,
        "indexed": 2,
    }
    copy = KnowledgeBase.objects.get(slug="phone-copy")
    assert copy.index_key != source.index_key
    assert _snapshot(copy) == before
    assert _indexed(copy) == _indexed(source)
    assert set(copy.documents.values_list("status", flat=True)) == {Document.Status.READY}
    # Versions come as metadata; none is made active here (its weights are elsewhere).
    assert not ActiveModel.objects.filter(kb=copy).exists()
    hits = kb_search(kb=copy, query="which adapter for fast charging", k=1)
    assert hits and Chunk.objects.get(pk=int(hits[0].chunk_id)).document.name == "battery.txt"
    for mode in ("dense", "bm25"):
        hit = kb_search(kb=copy, query="GPS location services", k=1, mode=mode)[0]
        assert Chunk.objects.get(pk=int(hit.chunk_id)).document.name == "gps.md", mode
    assert AuditEvent.objects.filter(action="kb.import", kb_slug="phone-copy").count() == 1
    assert AuditEvent.objects.filter(action="kb.export", kb_slug="phone").count() == 1

    # 2. The same slug again is refused, and changes nothing.
    with pytest.raises(CommandError, match="already exists"):
        _run("import_kb", str(out), "--slug", "phone-copy")
    assert KnowledgeBase.objects.filter(slug__startswith="phone").count() == 2

    # 3. After the original is deleted, under its own slug: the same KB again.
    kb_delete(kb=source)
    again = _run("import_kb", str(out))
    assert again["imported"] == "phone" and again["indexed"] == 2
    restored = KnowledgeBase.objects.get(slug="phone")
    assert _snapshot(restored) == before
    chunks, vectors, postings = _indexed(restored)
    assert chunks == vectors == postings == exported["chunks"]
    assert ReviewEvent.objects.filter(pair__kb=restored).count() == 2


def test_it_refuses_a_file_that_is_not_an_export(db: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.zip"
    with zipfile.ZipFile(bogus, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"format": "something-else"}))
    with pytest.raises(CommandError, match="not a RAFTweb knowledge-base export"):
        _run("import_kb", str(bogus))
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(CommandError, match="not a RAFTweb knowledge-base export"):
        _run("import_kb", str(tmp_path / "text.zip"))
    assert not KnowledgeBase.objects.exists()


def test_it_refuses_a_damaged_file_and_leaves_nothing_behind(
    alice: Any, rita: Any, tmp_path: Path
) -> None:
    _source_kb(alice, rita)
    out = tmp_path / "phone.raftkb"
    _run("export_kb", "phone", str(out))
    damaged = tmp_path / "damaged.raftkb"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.startswith("files/") and info.filename.endswith(".md"):
                data = data.replace(b"GPS", b"GPZ")  # one flipped byte in an original file
            dst.writestr(info, data)
    files_before = sorted(p for p in upload_root().rglob("*") if p.is_file())
    with pytest.raises(CommandError, match="damaged"):
        _run("import_kb", str(damaged), "--slug", "broken")
    assert not KnowledgeBase.objects.filter(slug="broken").exists()
    assert sorted(p for p in upload_root().rglob("*") if p.is_file()) == files_before
