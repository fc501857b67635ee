"""Jobs run by the real worker process, driven over HTTP the way a script user drives them.

The app is started as users start it (``manage.py serve``: migrate, web server, ``run_huey``
worker) on a throwaway data dir with the embedded stack (SQLite, SqliteHuey, embedded Chroma);
DATABASE_URL / REDIS_URL / CHROMA_URL are stripped for the subprocesses, so these tests run the
same on a laptop and in CI. The teacher and judge are a scripted OpenAI-compatible server on
loopback (:mod:`raftweb.testing.teacher_server`) that counts every request it serves.

Nothing here calls a service in-process: a task that the worker does not register, a worker
that ignores SIGTERM or a stopped job that cannot be resumed fails these tests.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest

from raftweb.core.management.commands.serve import STOP_GRACE_S
from raftweb.testing.teacher_server import TeacherServer
from tests.core.test_serve_command import _embedded_env, _wait_health
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

T = TypeVar("T")

# Three small manuals: one chunk each at the default chunk size (300 tokens).
MANUALS = {
    "reset.txt": (
        "To reset the television, hold the power button for ten seconds. The screen turns off "
        "and on again, and the factory settings are restored. Channels and passwords are erased "
        "by a reset, so write them down first."
    ),
    "warranty.txt": (
        "The warranty covers two years of normal use from the date of purchase. Water damage "
        "and cracked screens are not covered by the warranty. Keep the receipt as proof of the "
        "purchase date."
    ),
    "remote.txt": (
        "The remote control pairs with the television when you hold the home key and the back "
        "key together. A blinking light on the remote means the batteries are low. Replace both "
        "batteries at the same time."
    ),
}


def _long_manual(topic: str, sentences: int) -> str:
    """Distinct sentences about one topic (many small chunks at a small chunk size)."""
    return " ".join(
        f"The {topic} setting number {i} is changed by holding button {i % 5 + 1} "
        f"for {i + 2} seconds on the {topic} panel."
        for i in range(sentences)
    )


# --------------------------------------------------------------------------- helpers


def _unregistered(log_path: Path) -> None:
    """Fail at once (not after a timeout) when the worker was handed a task it does not know."""
    text = _tail(log_path, 200_000)
    assert "not found in TaskRegistry" not in text, text[-3000:]


def _until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    what: str,
    logs: Sequence[Path] = (),
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        last = fetch()
        if done(last):
            return last
        for log in logs:
            _unregistered(log)
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s; last seen: {last}")
        time.sleep(0.2)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _session_processes(sid: int) -> list[psutil.Process]:
    """Live processes of a session (a worker started with ``start_new_session``)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


@contextmanager
def _serve(tmp_path: Path, *, worker: bool) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """``manage.py serve`` (with its own worker, or the web server only) on a free port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "manage.py", "serve", "--port", str(port)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command + ([] if worker else ["--no-worker"]),
            cwd=ROOT,
            env=_embedded_env(tmp_path / "data"),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own terminal-like process group (see the Ctrl-C test)
        )
    try:
        yield base, proc, log_path
    finally:
        _stop(proc)
        if _session_processes(proc.pid):  # a child left behind by a failed test
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_web(base: str, proc: subprocess.Popen[str], log_path: Path) -> None:
    """Until the web server answers (serve migrates before it starts the web server)."""

    def up() -> bool:
        assert proc.poll() is None, f"serve exited early:\n{_tail(log_path)}"
        try:
            return httpx.get(f"{base}/api/health", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    _until(up, bool, timeout=120, what="the web server to answer")


@contextmanager
def _admin_api(base: str, log_path: Path) -> Iterator[httpx.Client]:
    """Log in with the admin password ``serve`` printed, create an API token on the account
    page, and return a client that authenticates with it (as a script would)."""
    match = re.search(r"username: (\S+)\s+password: (\S+)", log_path.read_text())
    assert match, _tail(log_path)
    username, password = match.groups()
    with httpx.Client(base_url=base, timeout=20) as browser:
        browser.get("/login/")
        response = browser.post(
            "/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/login/"},
        )
        assert response.status_code == 302, response.text[:500]
        response = browser.post(
            "/account/tokens/",
            data={"name": "worker-test", "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
            headers={"Referer": f"{base}/account/tokens/"},
        )
        assert response.status_code == 200, response.text[:500]
        token = re.search(r'data-testid="new-token">([^<]+)<', response.text)
        assert token, response.text[:1000]
    with httpx.Client(
        base_url=f"{base}/api",
        headers={"Authorization": f"Bearer {token.group(1)}"},
        timeout=30,
    ) as api:
        assert "admin" in api.get("/me").json()["roles"]
        yield api


def _point_models_at(api: httpx.Client, teacher: TeacherServer, *, concurrency: int) -> None:
    for role in ("teacher", "judge"):
        response = api.put(
            f"/model-profiles/{role}",
            json={
                "backend": "openai",
                "model": "scripted-teacher",
                "base_url": teacher.base_url,
                "api_key": "not-needed",
                "max_concurrency": concurrency,
                "timeout_s": 30,
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["base_url"] == teacher.base_url


def _kb_with_documents(
    api: httpx.Client, slug: str, documents: dict[str, str], logs: Sequence[Path], **kb: Any
) -> list[dict[str, Any]]:
    """Create a KB, upload the documents, and wait until the WORKER has ingested them."""
    response = api.post("/kbs", json={"name": slug.title(), "slug": slug, **kb})
    assert response.status_code == 201, response.text
    response = api.post(
        f"/kbs/{slug}/documents",
        files=[("files", (name, text.encode(), "text/plain")) for name, text in documents.items()],
    )
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert len(uploaded["documents"]) == len(documents) and not uploaded["failed"]
    # Nothing ingests in the request: the documents wait for the worker.
    assert {d["status"] for d in uploaded["documents"]} <= {"queued", "parsing", "embedding"}, (
        uploaded
    )
    docs = _until(
        lambda: api.get(f"/kbs/{slug}/documents").json(),
        lambda ds: all(d["status"] in ("ready", "failed") for d in ds),
        timeout=120,
        what="the worker to ingest the documents",
        logs=logs,
    )
    assert [d["status"] for d in docs] == ["ready"] * len(documents), docs
    assert all(d["chunk_count"] > 0 for d in docs), docs
    return docs


def _job(api: httpx.Client, job_id: int) -> dict[str, Any]:
    response = api.get(f"/generation-jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _pairs(api: httpx.Client, slug: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = api.get(f"/kbs/{slug}/qa-pairs", params={"offset": len(items), "limit": 50}).json()
        items += page["items"]
        if not page["items"] or len(items) >= page["count"]:
            assert len(items) == page["count"]
            return items


# --------------------------------------------------------------------------- tests


def test_it_ingests_and_generates_through_the_real_worker(tmp_path: Path) -> None:
    """The path the UI and the API take: every job is enqueued and run by ``run_huey``."""
    questions = 2
    with (
        TeacherServer.start(delay=0.0) as teacher,
        _serve(tmp_path, worker=True) as (base, serve, serve_log),
    ):
        _wait_health(base, serve)
        with _admin_api(base, serve_log) as api:
            _point_models_at(api, teacher, concurrency=4)
            docs = _kb_with_documents(api, "manuals", MANUALS, [serve_log])
            chunks = sum(d["chunk_count"] for d in docs)
            assert chunks == len(MANUALS)  # one chunk per small manual at the default size

            response = api.post(
                "/kbs/manuals/generation-jobs",
                json={
                    "config": {
                        "questions_per_chunk": questions,
                        "p": 1.0,  # the oracle is always in the context: no refusal rows
                        "judge_enabled": True,
                        "max_concurrency": 4,
                        "seed": 7,
                    }
                },
            )
            assert response.status_code == 201, response.text
            job = response.json()
            assert job["status"] == "queued" and job["chunks_total"] == chunks
            job = _until(
                lambda: _job(api, job["id"]),
                lambda j: j["status"] not in ("queued", "running"),
                timeout=60,
                what=f"the worker to run generation job {job['id']}",
                logs=[serve_log],
            )
            stats = teacher.stats()
            pairs = _pairs(api, "manuals")

    assert job["status"] == "finished", (job, _tail(serve_log))
    assert job["error"] == ""
    assert job["chunks_done"] == chunks and job["chunks_failed"] == 0
    assert job["rows"] == chunks * questions and job["rows_rejected"] == 0
    # One run needs, per chunk, one question call, then one answer and one judge call per
    # question - and the server saw exactly that: nothing retried, nothing sent twice.
    expected_calls = chunks * (1 + 2 * questions)
    assert stats == {
        "questions": chunks,
        "answer": chunks * questions,
        "judge": chunks * questions,
        "other": 0,
        "total": expected_calls,
        "completed": expected_calls,
        "duplicates": 0,
    }
    assert job["calls"] == expected_calls  # the job's own record agrees with the server

    assert len(pairs) == chunks * questions
    assert {p["job_id"] for p in pairs} == {job["id"]}
    assert len({p["oracle_chunk_id"] for p in pairs}) == chunks
    assert len({(p["oracle_chunk_id"], p["question"]) for p in pairs}) == len(pairs)
    assert {p["document"] for p in pairs} == set(MANUALS)
    assert all(p["quote_status"] == "verified" for p in pairs), pairs
    assert all(p["judge_score"] == 4 and p["status"] == "pending" for p in pairs), pairs
    assert all("<ANSWER>:" in p["cot_answer"] and p["final_answer"] for p in pairs)


@contextmanager
def _worker(tmp_path: Path, name: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``manage.py run_huey`` as its own process (and session), as a service manager runs it."""
    log_path = tmp_path / f"worker-{name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_huey"],
            cwd=ROOT,
            env=_embedded_env(tmp_path / "data"),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        yield proc, log_path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _terminate(proc: subprocess.Popen[str], log_path: Path) -> float:
    """SIGTERM the worker; assert it exits, cleanly, with nothing left behind; return seconds."""
    children = psutil.Process(proc.pid).children(recursive=True)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=STOP_WITHIN_S + 5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker ignored SIGTERM:\n{_tail(log_path)}") from None
    elapsed = time.monotonic() - start
    assert elapsed <= STOP_WITHIN_S, f"stopping took {elapsed:.1f}s:\n{_tail(log_path)}"
    assert code == 0, _tail(log_path)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert _session_processes(proc.pid) == []
    return elapsed


def _settled(teacher: TeacherServer) -> dict[str, int]:
    """The server's counts once requests already on the wire have reached it (the worker that
    sent them is dead, so they stop changing within moments, even on a loaded machine)."""
    previous = teacher.stats()
    deadline = time.monotonic() + 15
    while True:
        time.sleep(0.5)
        current = teacher.stats()
        if current == previous:
            return current
        assert time.monotonic() < deadline, f"requests still arriving: {previous} -> {current}"
        previous = current


def _units(data_dir: Path, job_id: int) -> dict[str, Any]:
    """Unit states, the job's status and heartbeat, read from the app's database itself."""
    with sqlite3.connect(f"file:{data_dir / 'raftweb.sqlite3'}?mode=ro", uri=True) as db:
        states = dict(
            db.execute(
                "SELECT state, COUNT(*) FROM corpus_generationunit WHERE job_id = ? GROUP BY state",
                (job_id,),
            ).fetchall()
        )
        attempts = sorted(
            {
                a
                for (a,) in db.execute(
                    "SELECT attempts FROM corpus_generationunit WHERE job_id = ? AND state = 'done'",
                    (job_id,),
                )
            }
        )
        status, heartbeat = db.execute(
            "SELECT status, heartbeat_at FROM corpus_generationjob WHERE id = ?", (job_id,)
        ).fetchone()
    return {
        "states": states,
        "done_attempts": attempts,
        "status": status,
        "heartbeat_at": heartbeat,
    }


STOP_WITHIN_S = 10.0
SLOW_JOB = {
    "questions_per_chunk": 1,
    "judge_enabled": False,
    "p": 1.0,
    "hard_negative_share": 0.0,
    "max_concurrency": 2,
    "seed": 3,
}
PER_CHUNK = 2  # calls per chunk of SLOW_JOB: one for the question, one for the answer
# Chunks a run has in progress at once at max_concurrency 2 (PipelineRunner: 2 x concurrency):
# a stopped worker abandons at most these, each after at most all of its calls.
ACTIVE_CHUNKS = 4


def _slow_job_under_way(
    api: httpx.Client, teacher: TeacherServer, worker_log: Path
) -> tuple[int, int]:
    """Ingest ~30 small chunks, launch SLOW_JOB on them (~10 s of teacher time at 0.3 s a call,
    2 at a time), and return (chunks, job id) once its first chunks are saved."""
    _point_models_at(api, teacher, concurrency=2)
    manuals = {f"{t}.txt": _long_manual(t, 16) for t in ("picture", "sound", "tuner")}
    docs = _kb_with_documents(api, "long", manuals, [worker_log], chunk_size=40, chunk_overlap=0)
    chunks = sum(d["chunk_count"] for d in docs)
    assert chunks >= 20, docs
    response = api.post("/kbs/long/generation-jobs", json={"config": SLOW_JOB})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    _until(
        lambda: _job(api, job_id),
        lambda j: j["chunks_done"] >= 3,
        timeout=60,
        what="the first chunks to be saved",
        logs=[worker_log],
    )
    return chunks, job_id


def test_it_stops_a_worker_on_sigterm_mid_job_and_resumes_without_duplicates(
    tmp_path: Path,
) -> None:
    """SIGTERM (what systemd, Docker and ``serve`` send) stops the worker within seconds; the
    operator presses Resume, a new worker finishes the job: no row twice, none lost."""
    data_dir = tmp_path / "data"
    with (
        TeacherServer.start(delay=0.3) as teacher,
        _serve(tmp_path, worker=False) as (base, web, web_log),
    ):
        _wait_web(base, web, web_log)
        with _worker(tmp_path, "a") as (worker, worker_log):
            _wait_health(base, web)  # the worker reported in
            with _admin_api(base, web_log) as api:
                chunks, job_id = _slow_job_under_way(api, teacher, worker_log)
            stopped_in = _terminate(worker, worker_log)
        assert stopped_in <= STOP_WITHIN_S

        with _admin_api(base, web_log) as api:
            # The worker is gone. It left some units done, the job unfinished and resumable.
            at_stop = _settled(teacher)
            job = _job(api, job_id)
            units = _units(data_dir, job_id)
            assert job["status"] == "running", job  # not finished, and its worker is gone:
            assert units["heartbeat_at"] is None  # no heartbeat, so Resume is accepted at once
            assert any("the worker stopped" in note for note in job["notes"]), job
            assert 0 < job["chunks_done"] < chunks, job
            done = job["chunks_done"]
            assert units["states"] == {"done": done, "pending": chunks - done}
            assert units["done_attempts"] == [1]
            assert job["rows"] == done and job["calls"] == done * PER_CHUNK
            # Calls spent on the chunks that were in progress and abandoned: bounded.
            abandoned = at_stop["total"] - done * PER_CHUNK
            assert 0 <= abandoned <= ACTIVE_CHUNKS * PER_CHUNK, (at_stop, job)

            # What an operator does: press Resume. Accepted at once (no waiting for the
            # heartbeat to go stale), and a new worker finishes the job.
            response = api.post(f"/generation-jobs/{job_id}/resume")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "queued"
            with _worker(tmp_path, "b") as (worker, worker_log):
                job = _until(
                    lambda: _job(api, job_id),
                    lambda j: j["status"] not in ("queued", "running"),
                    timeout=60,
                    what="the new worker to finish the job",
                    logs=[worker_log],
                )
                _terminate(worker, worker_log)
            end = teacher.stats()
            pairs = _pairs(api, "long")
            units = _units(data_dir, job_id)

    assert job["status"] == "finished", (job, _tail(worker_log))
    # Exactly an uninterrupted run's rows and saved calls: no chunk twice, none lost.
    assert job["chunks_done"] == chunks and job["chunks_failed"] == 0
    assert job["rows"] == chunks and job["calls"] == chunks * PER_CHUNK
    assert units["states"] == {"done": chunks} and units["done_attempts"] == [1]
    assert len(pairs) == chunks
    assert len({p["oracle_chunk_id"] for p in pairs}) == chunks
    # The teacher served one run's calls plus the abandoned ones, and repeated nothing else.
    assert end["total"] == chunks * PER_CHUNK + abandoned, (end, at_stop, job)
    assert end["duplicates"] == abandoned, (end, at_stop)
    assert end["questions"] + end["answer"] == end["total"]


def test_it_stops_the_app_on_ctrl_c_mid_job_and_hands_the_job_back(tmp_path: Path) -> None:
    """Ctrl-C in the terminal running ``make run`` (SIGINT to the whole foreground process
    group): only ``serve`` handles it and stops its worker with SIGTERM. A worker that got the
    SIGINT too would take it as Huey's graceful stop, keep running the job, and be killed."""
    with (
        TeacherServer.start(delay=0.3) as teacher,
        _serve(tmp_path, worker=True) as (base, serve, serve_log),
    ):
        _wait_health(base, serve)
        with _admin_api(base, serve_log) as api:
            chunks, job_id = _slow_job_under_way(api, teacher, serve_log)
        start = time.monotonic()
        os.killpg(serve.pid, signal.SIGINT)
        code = serve.wait(timeout=STOP_GRACE_S + 10)
        elapsed = time.monotonic() - start
        assert code == 0, _tail(serve_log)
        assert "RAFTweb stopped." in _tail(serve_log)
        assert _session_processes(serve.pid) == []

    # Stopped before serve's grace period ran out (nothing had to be killed), and the worker
    # handed the job back: some chunks saved, the rest pending, resumable at once.
    assert elapsed < STOP_GRACE_S, f"stopping took {elapsed:.1f}s:\n{_tail(serve_log)}"
    units = _units(tmp_path / "data", job_id)
    done = units["states"].get("done", 0)
    assert 0 < done < chunks, units
    assert units["states"] == {"done": done, "pending": chunks - done}
    assert units["status"] == "running" and units["heartbeat_at"] is None, units
