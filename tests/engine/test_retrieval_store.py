"""Vector store: embedded Chroma, a real Chroma server on loopback, and an unreachable one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from raftweb.registry import Registry, UnknownChoice
from raftweb.retrieval import (
    UnknownVectorStore,
    VectorStore,
    VectorStoreError,
    VectorStoreUnavailable,
    collection_name,
    open_vector_store,
    stores,
)
from raftweb.retrieval.store import forget_open_stores
from tests.services import free_port, port_open, require_service


def _unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _exercise(store_url: str, path: Path | None) -> None:
    store = open_vector_store(store_url, path)
    name = collection_name(7, "base")
    vectors = _unit(30)
    ids = [f"chunk-{i}" for i in range(30)]
    store.upsert(name, ids, vectors, [{"document_id": i % 3, "page": 1} for i in range(30)])
    assert store.count(name) == 30
    hits = store.query(name, vectors[4], 3)
    assert hits[0][0] == "chunk-4" and hits[0][1] == pytest.approx(1.0, abs=1e-4)
    assert all(
        int(c.split("-")[1]) % 3 == 2 for c, _ in store.query(name, vectors[4], 5, document_ids=[2])
    )
    assert store.query(name, vectors[4], 5, document_ids=[]) == []
    store.upsert(name, ids[:1], vectors[1:2], [{"document_id": 0}])  # upsert replaces
    assert store.count(name) == 30
    store.delete_document(name, 1)
    assert store.count(name) == 20
    store.drop(name)
    assert store.count(name) == 0


def test_it_stores_and_queries_in_embedded_chroma(tmp_path: Path) -> None:
    _exercise("", tmp_path / "chroma")


def test_it_names_collections_per_kb_and_embedding_version() -> None:
    assert collection_name(3, "base") == "kb-3-base"
    assert collection_name(3, "tuned/v2 (2026)") == "kb-3-tuned-v2-2026"
    assert collection_name(3, "base") != collection_name(3, "tuned")


def test_it_reports_an_unreachable_server_as_unavailable() -> None:
    port = free_port()
    with pytest.raises(VectorStoreUnavailable, match="unavailable"):
        open_vector_store(f"http://127.0.0.1:{port}").ping()


def test_it_names_the_known_schemes_for_an_unsupported_url() -> None:
    with pytest.raises(VectorStoreError) as info:
        open_vector_store("ftp://example.org/chroma")
    error = info.value
    assert isinstance(error, UnknownVectorStore) and isinstance(error, UnknownChoice)
    assert str(error) == (
        "unsupported vector store URL 'ftp://example.org/chroma'; "
        "known schemes: ['', 'file', 'http', 'https']"
    )
    assert error.name == "ftp"


def test_stores_are_chosen_by_scheme_from_the_shared_registry(tmp_path: Path) -> None:
    assert isinstance(stores, Registry)
    assert stores.names() == ["file", "http"]  # https is an alias of http
    opened: list[tuple[str, Path | None]] = []

    def open_memory(url: str, path: Path | None) -> VectorStore:
        opened.append((url, path))
        return open_vector_store("", tmp_path / "chroma")

    stores.add("test-mem", open_memory)
    try:
        store = open_vector_store("test-mem://x", tmp_path)
        assert opened == [("test-mem://x", tmp_path)]
        # A bare path (no scheme) and file:// both open the embedded store.
        assert open_vector_store(str(tmp_path / "chroma")) is store
        assert open_vector_store(f"file://{tmp_path / 'chroma'}") is store
    finally:
        stores.remove("test-mem")
        forget_open_stores()
    assert "test-mem" not in stores


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    cli = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    require_service(
        "chroma server", Path(cli).exists(), "the `chroma` CLI (chromadb package) is not installed"
    )
    port = free_port()
    log = open(tmp_path / "chroma.log", "wb")
    proc = subprocess.Popen(
        [cli, "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    try:
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline and proc.poll() is None and not port_open("127.0.0.1", port)
        ):
            time.sleep(0.2)
        require_service(
            "chroma server",
            port_open("127.0.0.1", port),
            f"`chroma run` did not start: {(tmp_path / 'chroma.log').read_text(errors='replace')[-500:]}",
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        forget_open_stores()


def test_it_works_against_a_real_chroma_server(chroma_server: str) -> None:
    _exercise(chroma_server, None)
