"""What the benchmarks that serve the app in a subprocess share: its environment and stopping
the processes they started."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def served_app_env(data_dir: str, **extra: str) -> dict[str, str]:
    """The environment of an app served for a benchmark: a throwaway data dir, production
    settings offline, and no rate limits (a benchmark measures capacity, not the limiter: its
    clients are one user, whom the default limits would hold back)."""
    return {
        **os.environ,
        "RAFTWEB_DATA_DIR": data_dir,
        "DJANGO_SETTINGS_MODULE": "raftweb.settings",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAFTWEB_DEBUG": "0",
        "RAFTWEB_RATE_CHAT": "off",
        "RAFTWEB_RATE_SEARCH": "off",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """Terminate every process, then wait for each; kill one that outlives ``timeout``."""
    procs = list(procs)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
