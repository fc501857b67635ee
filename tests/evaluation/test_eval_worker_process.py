"""An evaluation run enqueued over the API is run by the real worker process (``manage.py
serve``: web server + ``run_huey``), with the student on a scripted OpenAI-compatible server
and the judge on the scripted teacher server, both on loopback. Nothing runs in-process: a task
the worker does not register, or a run that is never claimed, fails this test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raftweb.testing.scripted_llm import ScriptedLLM
from raftweb.testing.teacher_server import TeacherServer
from tests.core.test_serve_command import _embedded_env, _wait_health
from tests.corpus.test_worker_process import (
    MANUALS,
    ROOT,
    _admin_api,
    _kb_with_documents,
    _point_models_at,
    _serve,
    _tail,
    _until,
)

pytestmark = pytest.mark.slow

QUESTIONS = [
    {"question": "How do I reset the television?", "answer": "hold the power button for ten seconds",
     "gold": ["reset.txt"]},
    {"question": "What does the warranty cover?", "answer": "two years of normal use",
     "gold": ["warranty.txt"]},
    {"question": "How does the remote pair?", "answer": "hold the home key and the back key",
     "gold": ["remote.txt", "missing#manual.pdf"]},
]  # fmt: skip


def test_it_runs_an_evaluation_enqueued_over_the_api_in_the_worker(tmp_path: Path) -> None:
    student = ScriptedLLM(token_delay_s=0.0).start()
    try:
        with (
            TeacherServer.start(delay=0.0) as judge,
            _serve(tmp_path, worker=True) as (base, serve, serve_log),
        ):
            _wait_health(base, serve)
            with _admin_api(base, serve_log) as api:
                _point_models_at(api, judge, concurrency=4)  # teacher and judge
                response = api.put(
                    "/model-profiles/student",
                    json={"backend": "openai", "model": student.model,
                          "base_url": student.base_url, "timeout_s": 30},
                )  # fmt: skip
                assert response.status_code == 200, response.text
                _kb_with_documents(api, "manuals", MANUALS, [serve_log])
                # A script imports the question set with the command, against the same data.
                questions = tmp_path / "questions.jsonl"
                questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
                imported = subprocess.run(
                    [sys.executable, "manage.py", "eval_import", "manuals", str(questions),
                     "--name", "external"],
                    cwd=ROOT, env=_embedded_env(tmp_path / "data"), capture_output=True,
                    text=True, timeout=120,
                )  # fmt: skip
                assert imported.returncode == 0, imported.stderr[-2000:]
                assert json.loads(imported.stdout.strip().splitlines()[-1])["questions"] == 3

                response = api.post(
                    "/kbs/manuals/eval-runs",
                    json={"configs": ["emb=base,gen=base", "emb=base,gen=base,mode=bm25"],
                          "question_set": "external", "k": 3},
                )  # fmt: skip
                assert response.status_code == 201, response.text
                run = response.json()
                assert run["status"] == "queued" and run["total_units"] == 6
                run = _until(
                    lambda: api.get(f"/eval-runs/{run['id']}").json(),
                    lambda r: r["status"] not in ("queued", "running"),
                    timeout=120,
                    what="the worker to run the evaluation",
                    logs=[serve_log],
                )
                results = api.get(f"/eval-runs/{run['id']}/results").json()
                judge_stats = judge.stats()
    finally:
        student.stop()

    assert run["status"] == "succeeded", (run, _tail(serve_log))
    assert run["done_units"] == 6 and run["percent"] == 100
    assert run["gold_missing"] == ["missing#manual.pdf"]
    assert [c["config"] for c in run["results"]] == [
        "emb=base,gen=base",
        "emb=base,gen=base,mode=bm25",
    ]
    for config in run["results"]:
        metrics, counts = config["metrics"], config["counts"]
        assert metrics["parse_success"] == 1.0 and counts["parse_success"]["den"] == 3
        assert metrics["judge_hard"] == 1.0, counts  # the scripted judge scores 4 of 5
        assert metrics["recall@k"] is not None and counts["recall@k"]["den"] == 3
        assert metrics["refusal_accuracy"] is None and counts["refusal_accuracy"]["reason"]
    # Each question was answered once per configuration and judged once: nothing repeated.
    assert len(results) == 6
    assert len(student.requests) == 6
    assert judge_stats["judge"] == 6
    assert all(r["citations"] and r["citations"][0]["verified"] for r in results)
