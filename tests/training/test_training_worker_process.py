"""A run trained by the real worker process (``manage.py run_huey``) with the fake script, on a
throwaway data dir with the embedded stack: `manage.py train` queues it, the worker claims it
and starts the script; a worker stopped with SIGTERM hands the run back and leaves the script
running; the next worker adopts that process and finishes the run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.core.test_serve_command import _embedded_env

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

SEED = """
import hashlib
from corpus.models import Chunk, Document, KnowledgeBase, QAPair
kb = KnowledgeBase.objects.create(slug="tv", name="TV")
doc = Document.objects.create(kb=kb, name="reset.txt", original_filename="reset.txt",
    file_path="reset.txt", content_hash="x" * 64, status="ready", chunk_count=1)
text = "To reset the television, hold the power button for ten seconds."
chunk = Chunk.objects.create(document=doc, ordinal=0, text=text, start=0, end=len(text),
    hash=hashlib.sha256(text.encode()).hexdigest())
for i in range(3):
    QAPair.objects.create(kb=kb, document=doc, oracle_chunk=chunk, question=f"Q{i}?",
        cot_answer="##begin_quote##hold the power button##end_quote## <ANSWER>: hold it",
        final_answer="hold it", context_chunk_ids=[chunk.pk], context_texts=[text],
        context_titles=[""], oracle_index=0, oracle_text=text, status="approved")
"""


def _env(data_dir: Path) -> dict[str, str]:
    return {
        **_embedded_env(data_dir),
        "RAFTWEB_TRAIN_MODULE": "tests.training.fake_train",
        "RAFTWEB_TRAIN_POLL_SECONDS": "0.1",
        "FAKE_TRAIN_STEPS": "40",
        "FAKE_TRAIN_STEP_S": "0.1",
        "FAKE_TRAIN_CKPT_EVERY": "100",  # no checkpoint: a restarted script would start over
    }


def _manage(data_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@contextmanager
def _worker(data_dir: Path, log_path: Path) -> Iterator[subprocess.Popen[str]]:
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_huey"],
            cwd=ROOT,
            env=_env(data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _run(data_dir: Path, run_id: int) -> dict[str, Any]:
    with sqlite3.connect(f"file:{data_dir / 'raftweb.sqlite3'}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT status, step, pid, heartbeat_at, attempts, error FROM training_trainingrun "
            "WHERE id = ?",
            (run_id,),
        ).fetchone()
    return dict(
        zip(("status", "step", "pid", "heartbeat_at", "attempts", "error"), row, strict=True)
    )


def _until(
    fetch: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    what: str,
    log: Path,
) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        last = fetch()
        if done(last):
            return last
        assert "not found in TaskRegistry" not in log.read_text(), log.read_text()[-3000:]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached; last {last}\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_it_trains_through_the_worker_and_survives_a_worker_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _manage(data_dir, "migrate", "--noinput")
    _manage(data_dir, "shell", "-c", SEED)
    queued = json.loads(_manage(data_dir, "train", "tv", "--kind", "generator").splitlines()[-1])
    assert queued["status"] == "queued" and queued["version"] is None
    run_id = queued["run"]
    pid = None
    try:
        first_log = tmp_path / "worker-1.log"
        with _worker(data_dir, first_log) as worker:
            run = _until(
                lambda: _run(data_dir, run_id),
                lambda r: r["status"] == "running" and r["step"] >= 5,
                "the worker to start the run",
                first_log,
            )
            pid = run["pid"]
            assert run["attempts"] == 1 and _alive(pid)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=15) == 0, first_log.read_text()[-3000:]

        run = _run(data_dir, run_id)
        assert run["status"] == "running" and run["heartbeat_at"] is None, run  # handed back
        assert _alive(pid), "the training process died with its worker"

        # The next worker takes it over (the periodic resume does the same within a minute).
        second_log = tmp_path / "worker-2.log"
        with _worker(data_dir, second_log):
            _manage(
                data_dir,
                "shell",
                "-c",
                f"from training.tasks import training_run_task; training_run_task({run_id})",
            )
            run = _until(
                lambda: _run(data_dir, run_id),
                lambda r: r["status"] not in ("queued", "running"),
                "the second worker to finish the run",
                second_log,
            )
        assert run["status"] == "succeeded", run
        assert run["attempts"] == 1, "the running process was started again instead of adopted"
        log = (data_dir / "runs" / str(run_id) / "log.txt").read_text()
        assert "resuming" not in log and log.count("=== ") == 1
    finally:
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
