"""The CLI contracts: `ingest` and `retrieval_eval` print exact JSON as their last line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from corpus.knowledge.services import kb_create
from corpus.models import Document, KnowledgeBase
from tests.corpus.corpus_files import PNG

pytestmark = pytest.mark.django_db

FILES = {
    "battery.txt": "Battery\n\nCharge the battery with the USB-C cable; fast charging needs the 25 W adapter.",
    "sub/gps.md": "# Location\n\nTurn on location services so apps can use **GPS** and Wi-Fi to find you.",
    "sub/deeper/camera.html": "<html><head><title>Camera</title></head><body><article><h1>Camera</h1>"
    "<p>Record HDR10+ video with the rear camera and use the ultra wide lens for landscapes and group "
    "photos.</p></article></body></html>",
}


def _run(*args: str) -> tuple[list[str], dict[str, object]]:
    out = io.StringIO()
    call_command(*args, stdout=out)
    lines = out.getvalue().strip().splitlines()
    return lines, json.loads(lines[-1])


def _corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "sub" / "photo.png").write_bytes(PNG)
    (root / "empty.txt").write_bytes(b"")
    return root


def test_it_ingests_folders_recursively_and_prints_the_json_contract(tmp_path: Path) -> None:
    root = _corpus(tmp_path)
    _, result = _run("ingest", "manual", str(root), "--create")
    assert list(result) == ["kb", "documents", "chunks", "failed"]
    assert result["kb"] == "manual"
    assert result["documents"] == 3
    assert result["chunks"] == 3
    failed = {Path(f["path"]).name: f["error"] for f in result["failed"]}  # type: ignore[union-attr,index]
    assert set(failed) == {"photo.png", "empty.txt"}
    assert "unsupported" in failed["photo.png"] and "empty" in failed["empty.txt"]
    kb = KnowledgeBase.objects.get(slug="manual")
    assert set(
        kb.documents.filter(status=Document.Status.READY).values_list("kind", flat=True)
    ) == {"text", "markdown", "html"}
    # Running it again indexes nothing twice.
    _, again = _run("ingest", "manual", str(root / "battery.txt"))
    assert again["documents"] == 1 and kb.documents.filter(name="battery.txt").count() == 1


def test_it_refuses_a_missing_kb_without_create(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="does not exist"):
        call_command("ingest", "nope", str(tmp_path), stdout=io.StringIO())


def test_it_reports_missing_paths_as_failures(tmp_path: Path) -> None:
    kb_create(name="KB", slug="kb")
    _, result = _run("ingest", "kb", str(tmp_path / "missing.pdf"))
    assert result == {
        "kb": "kb",
        "documents": 0,
        "chunks": 0,
        "failed": [{"path": str(tmp_path / "missing.pdf"), "error": "no such file or directory"}],
    }


def test_it_evaluates_retrieval_and_prints_the_json_contract(tmp_path: Path) -> None:
    root = _corpus(tmp_path)
    _run("ingest", "manual", str(root), "--create")
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {"question": "How do I use fast charging?", "gold": ["battery.txt"]},
                {"question": "turn on GPS location", "gold": ["gps"]},  # without extension
                {"question": "HDR10+ video recording", "gold": ["camera", "nonexistent"]},
            ]
        )
        + "\n"
    )
    for mode in ("hybrid", "dense", "bm25"):
        _, result = _run("retrieval_eval", "manual", str(questions), "--mode", mode)
        assert list(result) == ["questions", "recall@1", "recall@5", "recall@10", "mrr"]
        assert result == {
            "questions": 3,
            "recall@1": 1.0,
            "recall@5": 1.0,
            "recall@10": 1.0,
            "mrr": 1.0,
        }
    _, custom = _run(
        "retrieval_eval", "manual", str(questions), "--k", "2", "3", "--embedding", "base"
    )
    assert list(custom) == ["questions", "recall@2", "recall@3", "mrr"]


def test_it_scores_misses_and_rejects_bad_input(tmp_path: Path) -> None:
    root = _corpus(tmp_path)
    _run("ingest", "manual", str(root), "--create")
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question": "How do I use fast charging?", "gold": ["gps.md"]}) + "\n"
    )
    _, result = _run("retrieval_eval", "manual", str(questions), "--mode", "bm25", "--k", "1")
    assert result["recall@1"] == 0.0 and 0 < result["mrr"] < 1.0  # type: ignore[operator]
    with pytest.raises(CommandError, match="unknown embedding version"):
        call_command(
            "retrieval_eval", "manual", str(questions), "--embedding", "tuned", stdout=io.StringIO()
        )
    questions.write_text("not json\n")
    with pytest.raises(CommandError, match="not JSON"):
        call_command("retrieval_eval", "manual", str(questions), stdout=io.StringIO())
