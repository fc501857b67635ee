"""Fault: Redis (the Huey queue, the cache) restarts in the middle of a generation job, losing
everything it held (``--save ''``: no persistence). The app runs as users run it at scale
(``manage.py serve`` with its ``run_huey`` worker on Redis, REDIS_URL). The running job
finishes with exactly its rows and model calls; the worker reconnects by itself and runs the
next job queued into the new Redis; the web server keeps answering.

Needs the ``redis-server`` binary (a throwaway server on a free port, never the shared one)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib

from raftweb.testing.teacher_server import TeacherServer
from tests.core.test_serve_command import _wait_health
from tests.corpus import test_worker_process as worker
from tests.services import free_port, port_open, require_service

pytestmark = pytest.mark.slow

QUESTIONS = 2
CONFIG = {"questions_per_chunk": QUESTIONS, "p": 1.0, "judge_enabled": True, "seed": 7}


class RedisServer:
    def __init__(self, tmp_path: Path) -> None:
        self.binary = shutil.which("redis-server") or ""
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a crash, not a clean shutdown
            self.proc.wait(10)


@contextmanager
def _serve_on_redis(tmp_path: Path, redis: RedisServer) -> Iterator[tuple[str, Any, Path]]:
    """`manage.py serve` (web + worker) with Huey and the cache on ``redis``."""
    original = worker._embedded_env

    def env(data_dir: Path) -> dict[str, str]:
        return {**original(data_dir), "REDIS_URL": redis.url}

    worker._embedded_env = env  # type: ignore[assignment]
    try:
        with worker._serve(tmp_path, worker=True) as served:
            yield served
    finally:
        worker._embedded_env = original  # type: ignore[assignment]


def _run_job(api: httpx.Client) -> dict[str, Any]:
    response = api.post("/kbs/manuals/generation-jobs", json={"config": CONFIG})
    assert response.status_code == 201, response.text
    return response.json()


def _wait_job(api: httpx.Client, job_id: int, log: Path, timeout: float = 120) -> dict[str, Any]:
    return worker._until(
        lambda: worker._job(api, job_id),
        lambda j: j["status"] not in ("queued", "running"),
        timeout=timeout,
        what=f"generation job {job_id} to end",
        logs=[log],
    )


def test_a_redis_restart_mid_job_loses_no_row_and_the_worker_recovers(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    require_service("redis-server", bool(redis.binary), "the redis-server binary is not installed")
    redis.start()
    try:
        with (
            TeacherServer.start(delay=0.4) as teacher,
            _serve_on_redis(tmp_path, redis) as (base, serve, log),
        ):
            _wait_health(base, serve)
            with worker._admin_api(base, log) as api:
                worker._point_models_at(api, teacher, concurrency=2)
                docs = worker._kb_with_documents(api, "manuals", worker.MANUALS, [log])
                chunks = sum(d["chunk_count"] for d in docs)
                job = _run_job(api)
                # Mid-job: at least one model call answered, the job not finished.
                worker._until(
                    lambda: (worker._job(api, job["id"]), teacher.stats()["completed"]),
                    lambda s: s[0]["status"] == "running" and s[1] >= 1,
                    timeout=60,
                    what="the job to be running",
                    logs=[log],
                )
                # The app really is on this Redis: its worker polls the queue there.
                stats_before = redis_lib.Redis(port=redis.port).info("stats")
                assert stats_before["total_commands_processed"] > 20, stats_before
                redis.stop()
                time.sleep(1.0)  # the worker and the web server see it gone
                redis.start()  # empty: the queue and the cache are lost
                first = _wait_job(api, job["id"], log)
                # The worker reconnects: a job queued into the new Redis runs.
                second = _wait_job(api, _run_job(api)["id"], log)
                stats = teacher.stats()
                pairs = worker._pairs(api, "manuals")
                health = httpx.get(f"{base}/api/health", timeout=10)
    finally:
        redis.stop()

    per_job = chunks * (1 + 2 * QUESTIONS)
    for done in (first, second):
        assert done["status"] == "finished", (done, worker._tail(log))
        assert done["rows"] == chunks * QUESTIONS and done["chunks_failed"] == 0
        assert done["calls"] == per_job
    assert stats["total"] == stats["completed"] == 2 * per_job
    assert len(pairs) == 2 * chunks * QUESTIONS
    assert len({(p["job_id"], p["oracle_chunk_id"], p["question"]) for p in pairs}) == len(pairs)
    assert health.status_code in (200, 503)
