"""The engine (raftweb.llm/retrieval/raft/ingest/metrics) must work without Django."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_it_imports_the_engine_without_django_configured() -> None:
    code = (
        "import sys, importlib\n"
        "for name in ['raftweb.llm', 'raftweb.retrieval', 'raftweb.raft', 'raftweb.ingest', 'raftweb.metrics']:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print('DJANGO', bad)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DJANGO []" in result.stdout
