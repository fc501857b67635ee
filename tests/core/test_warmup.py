"""The web process loads the embedding model in the background as it starts, and /api/health
says when it is ready (to logged-in users; anonymous callers still get up/down only)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_warmup(settings: Any) -> Iterator[Any]:
    from raftweb.core import warmup

    settings.EMBEDDING_WARMUP = True
    settings.HEALTH_CACHE_S = 0
    saved = dict(warmup._state), warmup._thread, warmup._web_process
    warmup._state.update(warm="off", detail="", model="")
    warmup._thread = None
    # Another test's import of raftweb.asgi marks this whole test process as a web process.
    warmup._web_process = False
    yield warmup
    gc.unfreeze()
    warmup._state.clear()
    warmup._state.update(saved[0])
    warmup._thread = saved[1]
    warmup._web_process = saved[2]


def test_it_loads_the_embedding_model_in_the_background_and_health_says_so(
    transactional_db: Any, alice: Any, client_for: Any, fresh_warmup: Any
) -> None:
    from django.test import Client

    thread = fresh_warmup.start_embedding_warmup()
    assert thread is not None and thread.daemon and thread.name == "embedding-warmup"
    assert fresh_warmup.start_embedding_warmup() is None  # once per process
    thread.join(timeout=120)
    assert fresh_warmup.warmup_state()["warm"] == "ready"
    assert gc.get_freeze_count() == 0  # not the web process: its heap is left alone

    embedding = client_for(alice).get("/api/health").json()["models"]["embedding"]
    assert embedding["ok"] is True and embedding["data"]["warm"] == "ready"
    assert "loaded in this process" in embedding["detail"]
    # Anonymous callers: still status only (issue 12), not a word about loading.
    assert Client().get("/api/health").json()["models"]["embedding"] == {"ok": True}


def test_the_web_process_exempts_its_start_up_heap_from_collection_scans(
    transactional_db: Any, fresh_warmup: Any
) -> None:
    fresh_warmup.mark_web_process()
    try:
        fresh_warmup.embedding_warmup()
        assert fresh_warmup.warmup_state()["warm"] == "ready"
        # Full collections under chat load no longer walk the model and the libraries.
        assert gc.get_freeze_count() > 100_000
    finally:
        gc.unfreeze()


def test_it_reports_a_model_still_loading(
    db: Any, alice: Any, client_for: Any, fresh_warmup: Any
) -> None:
    fresh_warmup._set(warm="loading", detail="loading the embedding model in the background")
    embedding = client_for(alice).get("/api/health").json()["models"]["embedding"]
    assert embedding["data"]["warm"] == "loading" and "loading" in embedding["detail"]


def test_it_starts_when_the_web_process_imports_its_asgi_application(tmp_path: Path) -> None:
    # (This throwaway data dir has no database tables: the load starts, then fails.)
    code = (
        "import raftweb.asgi\nfrom raftweb.core.warmup import warmup_state\nprint(warmup_state())\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "raftweb.settings",
        "RAFTWEB_DATA_DIR": str(tmp_path),
        "RAFTWEB_IGNORE_DOTENV": "1",
        "RAFTWEB_EMBEDDING_WARMUP": "1",
        "HF_HUB_OFFLINE": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'warm': 'off'" not in out.stdout and "'warm': '" in out.stdout
    env["RAFTWEB_EMBEDDING_WARMUP"] = "0"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "'warm': 'off'" in out.stdout


def _query_process_probe(env: dict[str, str], import_asgi: bool) -> dict:
    code = (
        ("import raftweb.asgi\n" if import_asgi else "import django\ndjango.setup()\n")
        + "import json\n"
        "from raftweb.core.warmup import query_batching\n"
        "from raftweb.retrieval import load_embedder\n"
        "e = load_embedder()\n"
        "e.configure_batching(**query_batching())\n"
        "v = e.encode_queries(['how do I reset the phone?'])\n"
        "proc = e.query_process and e.query_process._proc\n"
        "print(json.dumps({'process': query_batching()['process'],\n"
        "    'child': proc.args if proc else None, 'shape': list(v.shape)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_web_process_encodes_queries_in_a_child_process_by_default(tmp_path: Path) -> None:
    """RAFTWEB_EMBED_PROCESS=auto: the process that imports raftweb.asgi (the web server)
    encodes queries in a child process; workers and commands do not; the setting overrides."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "raftweb.settings",
        "RAFTWEB_DATA_DIR": str(tmp_path),
        "RAFTWEB_IGNORE_DOTENV": "1",
        "RAFTWEB_EMBEDDING_WARMUP": "0",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("RAFTWEB_EMBED_PROCESS", None)
    web = _query_process_probe(env, import_asgi=True)
    assert web["process"] is True and web["shape"] == [1, 384]
    assert "raftweb.retrieval.query_process" in " ".join(web["child"])
    worker = _query_process_probe(env, import_asgi=False)
    assert worker == {"process": False, "child": None, "shape": [1, 384]}
    env["RAFTWEB_EMBED_PROCESS"] = "0"
    assert _query_process_probe(env, import_asgi=True)["child"] is None
