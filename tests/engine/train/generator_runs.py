"""Helpers for the generator-training tests: run directories on the tiny model, and the real
entry point (``python -m raftweb.train.run --run-dir DIR``) as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raftweb.testing.tiny_model import synthetic_raft_rows, write_jsonl
from raftweb.train.config import resolve_config

ROOT = Path(__file__).resolve().parents[3]

# The tiny model is random and 2 layers deep: it needs a larger step than a real model to show
# a falling loss within a few steps (cpu-smoke's 1e-4 is meant for a pretrained small model).
TINY_LR = 1e-3


def make_run_dir(
    path: Path,
    model_dir: Path,
    *,
    rows: int = 80,
    eval_rows: int = 0,
    preset: str | None = "cpu-smoke",
    **overrides: Any,
) -> Path:
    """A run directory as the worker writes it: config.json (preset + overrides) and data/."""
    values = {"base_model": str(model_dir), "learning_rate": TINY_LR, **overrides}
    config = resolve_config("generator", preset, values).to_dict()
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_jsonl(path / "data" / "train.jsonl", synthetic_raft_rows(rows, seed=1))
    write_jsonl(path / "data" / "eval.jsonl", synthetic_raft_rows(eval_rows, seed=2))
    return path


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


def start(run_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    """The training process, as the worker starts it (stdout and stderr into log.txt)."""
    log = (run_dir / "log.txt").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "raftweb.train.run", "--run-dir", str(run_dir), *args],
        cwd=ROOT,
        env=script_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_script(run_dir: Path, *args: str, timeout: float = 120) -> int:
    proc = start(run_dir, *args)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def events(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in out if kind is None or e["event"] == kind]


def done_event(run_dir: Path) -> dict[str, Any]:
    done = events(run_dir, "done")
    assert done, f"no done event; log:\n{log_text(run_dir)[-3000:]}"
    return done[-1]


def log_text(run_dir: Path) -> str:
    path = run_dir / "log.txt"
    return path.read_text(errors="replace") if path.is_file() else ""


def wait_until(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], *, timeout: float = 90
) -> None:
    """Poll ``check`` until it holds; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the training process ended (rc {proc.returncode}) too early")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the training process")
