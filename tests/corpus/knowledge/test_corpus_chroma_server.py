"""The whole corpus path against a real Chroma server (CHROMA_URL), started on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corpus.knowledge.indexes import document_delete, vector_store
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.search import kb_search
from corpus.knowledge.services import document_upload, kb_create
from corpus.models import Document
from raftweb.retrieval import collection_name
from raftweb.retrieval.store import forget_open_stores
from tests.services import free_port, port_open, require_service


@pytest.fixture
def chroma_url(tmp_path: Path, settings: object) -> Iterator[str]:
    cli = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    require_service(
        "chroma server", Path(cli).exists(), "the `chroma` CLI (chromadb package) is not installed"
    )
    port = free_port()
    log_path = tmp_path / "chroma.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                cli,
                "run",
                "--path",
                str(tmp_path / "srv"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        try:
            deadline = time.monotonic() + 60
            while (
                time.monotonic() < deadline
                and proc.poll() is None
                and not port_open("127.0.0.1", port)
            ):
                time.sleep(0.2)
            require_service(
                "chroma server",
                port_open("127.0.0.1", port),
                f"`chroma run` did not start: {log_path.read_text(errors='replace')[-500:]}",
            )
            url = f"http://127.0.0.1:{port}"
            settings.CHROMA_URL = url  # type: ignore[attr-defined]
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            forget_open_stores()


@pytest.mark.django_db
def test_it_ingests_searches_and_deletes_through_a_chroma_server(chroma_url: str) -> None:
    kb = kb_create(name="Server KB")
    doc = document_upload(
        kb=kb, name="gps.txt", chunks=[b"Location\n\nTurn on GPS in quick settings."], enqueue=False
    ).document
    doc = document_ingest(document_id=doc.pk)
    assert doc.status == Document.Status.READY
    assert vector_store().label == chroma_url  # type: ignore[attr-defined]
    assert vector_store().count(collection_name(kb.index_key, "base")) == 1
    hits = kb_search(kb=kb, query="enable GPS", mode="dense", k=1)
    assert hits and hits[0].document_name == "gps.txt"
    document_delete(document=doc)
    assert vector_store().count(collection_name(kb.index_key, "base")) == 0
