"""Evaluation API: start a run (bad configurations fail before anything is created), read its
matrix and per-question results, cancel; errors in the one JSON shape."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.models import EvalRun
from evaluation.runner import eval_run_execute

pytestmark = pytest.mark.django_db


def _client(client_for: Any, api_token_for: Any, user: Any) -> Any:
    client = client_for(user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_token_for(user)}"
    return client


def test_it_starts_reads_and_cancels_runs(
    eval_kb: Any, student_llm: Any, judge_down: None, client_for: Any, api_token_for: Any,
    alice: Any, rita: Any, django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    api = _client(client_for, api_token_for, alice)
    bad = api.post(
        "/api/kbs/tv/eval-runs",
        {"configs": ["emb=base,gen=base", "gen=version:41"]},
        content_type="application/json",
    )
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"
    assert "no generator version 41" in bad.json()["error"]["message"]
    bad = api.post(
        "/api/kbs/tv/eval-runs", {"configs": ["gen=nonsense"]}, content_type="application/json"
    )
    assert bad.status_code == 400 and not EvalRun.objects.exists()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = api.post(
            "/api/kbs/tv/eval-runs",
            {"configs": ["emb=base,gen=base"], "mode": "bm25", "k": 2},
            content_type="application/json",
        )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "queued" and body["total_units"] == 4 and len(callbacks) == 1
    run = eval_run_execute(run_id=body["id"])
    assert run.status == "succeeded"

    reviewer = _client(client_for, api_token_for, rita)
    detail = reviewer.get(f"/api/eval-runs/{run.pk}").json()
    assert detail["questions"] == 4 and detail["percent"] == 100
    [config] = detail["results"]
    assert config["config"] == "emb=base,gen=base"
    assert config["metrics"]["judge_hard"] is None
    assert config["counts"]["judge_hard"]["reason"].startswith("judge unavailable")
    assert detail["judge_unavailable"]
    results = reviewer.get(f"/api/eval-runs/{run.pk}/results").json()
    assert len(results) == 4 and all(r["config"] == "emb=base,gen=base" for r in results)
    assert {"parse_ok", "gold_rank", "judge_error"} <= set(results[0]["scores"])
    assert reviewer.post(f"/api/eval-runs/{run.pk}/cancel").status_code == 403
    done = api.post(f"/api/eval-runs/{run.pk}/cancel")
    assert done.status_code == 409 and done.json()["error"]["code"] == "not_active"
