"""Fault: the Chroma server (CHROMA_URL) goes down and comes back in the middle of a bulk
ingestion. The embedding round that met the dead server fails its documents with the reason;
the rounds after the restart go on (the client reconnects by itself); vectors written before
the restart are still there; Retry finishes the failed documents. Afterwards the database,
Chroma and BM25 hold exactly one entry per chunk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corpus.knowledge import ingestion
from corpus.knowledge.indexes import bm25_index, vector_store
from corpus.knowledge.ingestion import documents_ingest
from corpus.knowledge.search import kb_search
from corpus.knowledge.services import document_upload, kb_create
from corpus.models import BASE_VERSION, Chunk, Document
from raftweb.retrieval import collection_name
from raftweb.retrieval.store import forget_open_stores
from tests.services import free_port, port_open, require_service

pytestmark = pytest.mark.django_db

TOPICS = ["battery", "camera", "screen", "speaker", "charger", "remote"]


class ChromaServer:
    """``chroma run`` on loopback, on a fixed port and data folder across restarts."""

    def __init__(self, path: Path) -> None:
        self.cli = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        self.path, self.port = path, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.path.with_suffix(".log"), "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                self.cli,
                "run",
                "--path",
                str(self.path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.2)
        require_service("chroma server", False, "`chroma run` did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def chroma(tmp_path: Path, settings: Any) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path / "chroma")
    require_service(
        "chroma server", Path(server.cli).exists(), "the `chroma` CLI (chromadb) is not installed"
    )
    server.start()
    settings.CHROMA_URL = server.url
    try:
        yield server
    finally:
        server.stop()
        forget_open_stores()


def test_it_survives_a_chroma_restart_mid_ingestion_with_exact_counts(
    chroma: ChromaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = kb_create(name="Restarts")
    ids = [
        document_upload(
            kb=kb,
            name=f"{topic}.txt",
            chunks=[f"The {topic} section. Clean the {topic} with a dry cloth.".encode()],
            enqueue=False,
        ).document.pk
        for topic in TOPICS
    ]
    real_embed = ingestion._embed
    rounds: list[int] = []

    def embed_with_restart(*args: Any, **kwargs: Any) -> Any:
        rounds.append(1)
        if len(rounds) == 2:
            chroma.stop()  # round 2 meets a dead server
        if len(rounds) == 3:
            chroma.start()  # round 3 meets the restarted one
        return real_embed(*args, **kwargs)

    monkeypatch.setattr(ingestion, "_embed", embed_with_restart)
    documents = documents_ingest(document_ids=ids, batch_size=2)  # three rounds of two
    assert len(rounds) == 3
    status = {d.name: d.status for d in documents}
    failed = [d for d in documents if d.status == Document.Status.FAILED]
    assert [d.name for d in failed] == ["screen.txt", "speaker.txt"], status
    assert all("vector store" in d.error and "retry" in d.error for d in failed)
    ready = [d.pk for d in documents if d.status == Document.Status.READY]
    assert len(ready) == 4
    collection = collection_name(kb.index_key, BASE_VERSION)
    # Round 1's vectors outlived the restart; round 3's went to the new process.
    assert vector_store().count(collection) == 4
    assert bm25_index(kb).count() == 4

    # Retry the two failed documents: they resume from their stored chunks.
    monkeypatch.setattr(ingestion, "_embed", real_embed)
    again = documents_ingest(document_ids=[d.pk for d in failed])
    assert {d.status for d in again} == {Document.Status.READY}
    chunks = Chunk.objects.filter(document__kb=kb).count()
    assert chunks == len(TOPICS)
    assert vector_store().count(collection) == chunks
    assert bm25_index(kb).count() == chunks
    assert set(Chunk.objects.filter(document__kb=kb).values_list("embedded", flat=True)) == {True}
    for topic in TOPICS:
        hit = kb_search(kb=kb, query=f"clean the {topic}", k=1, mode="dense")[0]
        assert hit.document_name == f"{topic}.txt"
