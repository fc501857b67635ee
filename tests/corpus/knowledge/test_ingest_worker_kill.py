"""A real worker killed (SIGKILL) mid-ingest, and a new one that resumes what it left.

The app runs as users run it (``manage.py serve --no-worker`` and ``manage.py run_huey``) on a
throwaway data dir with the embedded stack (SQLite, SqliteHuey, embedded Chroma); helpers come
from :mod:`tests.corpus.test_worker_process`. The stale time is short here
(RAFTWEB_INGEST_STALE_SECONDS). The stale sweep is a periodic task that runs every minute, and
a worker's scheduler checks periodic tasks as it starts, so a worker started after the stale
time resumes the orphaned documents at once. Counts are read afterwards from the data dir
itself: the app's database, Chroma's files and the BM25 index.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from raftweb.retrieval import collection_name
from tests.corpus.test_worker_process import (
    _admin_api,
    _long_manual,
    _serve,
    _tail,
    _terminate,
    _until,
    _wait_web,
    _worker,
)

pytestmark = pytest.mark.slow

DOCUMENTS = 60
SENTENCES = 3  # a chunk each at chunk_size 40
STALE_S = 2
IN_PROGRESS = ("parsing", "embedding")


def _db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'raftweb.sqlite3'}?mode=ro", uri=True, timeout=30)


def _documents(data_dir: Path) -> dict[int, tuple[str, str, int]]:
    """id -> (status, updated_at, chunk_count), from the app's database."""
    with _db(data_dir) as db:
        rows = db.execute("SELECT id, status, updated_at, chunk_count FROM corpus_document")
        return {pk: (status, updated, count) for pk, status, updated, count in rows}


def _stores(data_dir: Path) -> dict[str, Any]:
    """Chunk ids in the database, vectors in Chroma, postings in BM25 (workers stopped)."""
    import chromadb
    from chromadb.config import Settings

    with _db(data_dir) as db:
        (index_key,) = db.execute("SELECT index_key FROM corpus_knowledgebase").fetchone()
        chunks = [str(pk) for (pk,) in db.execute("SELECT id FROM corpus_chunk")]
        not_embedded = db.execute("SELECT COUNT(*) FROM corpus_chunk WHERE NOT embedded")
        not_embedded = not_embedded.fetchone()[0]
        chunk_counts = db.execute("SELECT SUM(chunk_count) FROM corpus_document").fetchone()[0]
    bm25_file = data_dir / "bm25" / f"kb_{index_key}.sqlite3"
    with sqlite3.connect(f"file:{bm25_file}?mode=ro", uri=True) as bm25:
        postings = [cid for (cid,) in bm25.execute("SELECT chunk_id FROM docs")]
    client = chromadb.PersistentClient(
        path=str(data_dir / "chroma"), settings=Settings(anonymized_telemetry=False)
    )
    collection = client.get_collection(collection_name(index_key, "base"))
    vectors = collection.get(include=[])["ids"]
    return {
        "chunks": chunks,
        "chunk_counts": chunk_counts,
        "not_embedded": not_embedded,
        "vectors": vectors,
        "vector_count": collection.count(),
        "postings": postings,
    }


def test_it_resumes_documents_a_killed_worker_left_half_ingested(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTWEB_INGEST_STALE_SECONDS", str(STALE_S))  # read by the subprocesses
    data_dir = tmp_path / "data"
    manuals = {
        f"manual-{i:03d}.txt": _long_manual(f"panel{i}", SENTENCES) for i in range(DOCUMENTS)
    }
    with _serve(tmp_path, worker=False) as (base, web, web_log):
        _wait_web(base, web, web_log)
        with _worker(tmp_path, "a") as (worker, worker_log):
            # Uploaded while the worker starts: the tasks wait for it in the queue.
            with _admin_api(base, web_log) as api:
                response = api.post(
                    "/kbs", json={"name": "TV", "slug": "tv", "chunk_size": 40, "chunk_overlap": 0}
                )
                assert response.status_code == 201, response.text
                response = api.post(
                    "/kbs/tv/documents",
                    files=[("files", (n, t.encode(), "text/plain")) for n, t in manuals.items()],
                )
                assert response.status_code == 201, response.text
                assert len(response.json()["documents"]) == DOCUMENTS

            # SIGKILL the worker once a quarter is ready, while it is embedding a document.
            def mid_ingest() -> dict[int, tuple[str, str, int]]:
                assert worker.poll() is None, _tail(worker_log)
                return _documents(data_dir)

            def quarter_and_embedding(docs: dict[int, tuple[str, str, int]]) -> bool:
                statuses = [status for status, _, _ in docs.values()]
                return statuses.count("ready") >= DOCUMENTS // 4 and "embedding" in statuses

            _until(mid_ingest, quarter_and_embedding, timeout=60, what="ingestion under way")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        at_kill = _documents(data_dir)
        stuck = {pk for pk, (status, _, _) in at_kill.items() if status in IN_PROGRESS}
        ready_at_kill = sum(status == "ready" for status, _, _ in at_kill.values())
        # What the finding saw: documents held by the dead worker, ready ones beside them.
        assert stuck, at_kill
        assert DOCUMENTS // 4 <= ready_at_kill < DOCUMENTS - len(stuck), at_kill

        # The dead worker's documents have no task left (it had taken theirs) and a heartbeat
        # that goes stale. Once it has, a new worker starts: it runs the queued tasks, and its
        # stale sweep (run as its scheduler starts) resumes the rest.
        time.sleep(STALE_S)
        with _worker(tmp_path, "b") as (worker, worker_log):

            def now() -> dict[int, tuple[str, str, int]]:
                assert worker.poll() is None, _tail(worker_log)
                return _documents(data_dir)

            final = _until(
                now,
                lambda docs: all(status == "ready" for status, _, _ in docs.values()),
                timeout=90,
                what="the new worker to ingest every document",
            )
            _terminate(worker, worker_log)
        log = worker_log.read_text()
        assert "Traceback" not in log, log[-3000:]
        resumed = {int(pk) for pk in re.findall(r"resuming the ingestion of document (\d+) ", log)}
        # Exactly the orphans: the documents the dead worker held, and any it had taken the task
        # of but not yet claimed; never one whose task was still waiting in the queue.
        queued_at_kill = {pk for pk, (status, _, _) in at_kill.items() if status == "queued"}
        assert stuck <= resumed <= stuck | queued_at_kill, (resumed, stuck)
        assert len(resumed) <= 2, resumed  # the dead worker ran two threads

    assert len(final) == DOCUMENTS
    found = _stores(data_dir)
    chunks = found["chunks"]
    assert len(chunks) == found["chunk_counts"] and found["not_embedded"] == 0
    assert len(chunks) >= 2 * DOCUMENTS  # several chunks a document
    # Every chunk exactly once in each index: no vector or posting missing, none twice.
    assert sorted(found["vectors"]) == sorted(chunks) and found["vector_count"] == len(chunks)
    assert sorted(found["postings"]) == sorted(chunks)
