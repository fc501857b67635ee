from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_it_imports_the_raft_engine_and_metrics_without_django() -> None:
    code = (
        "import sys, os; os.environ.pop('DJANGO_SETTINGS_MODULE', None);"
        "import raftweb.raft, raftweb.raft.answer, raftweb.raft.context, raftweb.raft.formats,"
        " raftweb.raft.citations, raftweb.raft.evidence,"
        " raftweb.raft.judge, raftweb.raft.matching, raftweb.raft.pipeline, raftweb.raft.prompts,"
        " raftweb.raft.questions, raftweb.raft.quotes, raftweb.raft.splits, raftweb.metrics;"
        "bad = [m for m in sys.modules if m == 'django' or m.startswith(('django.', 'corpus', 'chat', 'training'))];"
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
