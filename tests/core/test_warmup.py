"""The web process loads the embedding model in the background as it starts, and /api/health
says when it is ready (to logged-in users; anonymous callers still get up/down only)."""

from __future__ import annotations

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
    saved = dict(warmup._state), warmup._thread
    warmup._state.update(warm="off", detail="", model="")
    warmup._thread = None
    yield warmup
    warmup._state.clear()
    warmup._state.update(saved[0])
    warmup._thread = saved[1]


def test_it_loads_the_embedding_model_in_the_background_and_health_says_so(
    transactional_db: Any, alice: Any, client_for: Any, fresh_warmup: Any
) -> None:
    from django.test import Client

    thread = fresh_warmup.start_embedding_warmup()
    assert thread is not None and thread.daemon and thread.name == "embedding-warmup"
    assert fresh_warmup.start_embedding_warmup() is None  # once per process
    thread.join(timeout=120)
    assert fresh_warmup.warmup_state()["warm"] == "ready"

    embedding = client_for(alice).get("/api/health").json()["models"]["embedding"]
    assert embedding["ok"] is True and embedding["data"]["warm"] == "ready"
    assert "loaded in this process" in embedding["detail"]
    # Anonymous callers: still status only (issue 12), not a word about loading.
    assert Client().get("/api/health").json()["models"]["embedding"] == {"ok": True}


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
