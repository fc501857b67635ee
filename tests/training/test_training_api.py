"""The training API: launch, list, inspect (recent metrics, log tail, loss curves), cancel and
resume runs; list and activate model versions. Who may call what is in the permission matrix."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from corpus.models import QAPair
from training.models import ModelVersion, TrainingRun
from training.runner import training_run_execute
from training.selectors import active_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(alice: Any, api_token_for: Callable[[Any], str]) -> Callable[..., Any]:
    headers = {"Authorization": f"Bearer {api_token_for(alice)}"}
    client = Client()

    def call(method: str, path: str, body: Any = None) -> Any:
        if body is None:
            return client.generic(method, f"/api{path}", headers=headers)
        return client.generic(
            method, f"/api{path}", data=body, content_type="application/json", headers=headers
        )

    return call


def test_it_launches_lists_and_shows_a_run(tv_kb: Any, api: Callable[..., Any]) -> None:
    response = api("POST", "/kbs/tv/training-runs", json.dumps({"kind": "generator"}))
    assert response.status_code == 201, response.content
    body = response.json()
    run = TrainingRun.objects.get()
    assert body["id"] == run.pk and body["status"] == "queued" and body["kb"] == "tv"
    assert (body["rows_train"], body["rows_eval"], body["rows_from_feedback"]) == (9, 1, 1)
    assert body["version"] is None and body["stale"] is False

    training_run_execute(run_id=run.pk)
    listed = api("GET", "/kbs/tv/training-runs").json()
    assert [r["id"] for r in listed] == [run.pk] and listed[0]["status"] == "succeeded"

    detail = api("GET", f"/training-runs/{run.pk}").json()
    assert detail["version"] == ModelVersion.objects.get(run=run).pk
    assert [m["line"] for m in detail["recent_metrics"]] == list(range(8))
    assert detail["recent_metrics"][-1]["event"] == "done"
    assert "fake training: generator on 9 rows" in detail["log_tail"]
    assert (detail["step"], detail["total_steps"], detail["percent"]) == (6, 6, 100)

    series = api("GET", f"/training-runs/{run.pk}/metrics").json()
    assert [p["step"] for p in series["train"]] == [1, 2, 3, 4, 5, 6]
    assert series["train"][0]["loss"] == 2.0
    assert series["eval"] == [{"step": 6, "eval_loss": 0.75}]


def test_it_passes_launch_options_into_the_config(tv_kb: Any, api: Callable[..., Any]) -> None:
    body = {
        "kind": "embedding",
        "preset": "cpu-smoke",
        "base_model": "/models/minilm",
        "epochs": 2,
        "learning_rate": 0.0001,
        "overrides": {"batch_size": 8},
        "activate": True,
    }
    response = api("POST", "/kbs/tv/training-runs", json.dumps(body))
    assert response.status_code == 201, response.content
    run = TrainingRun.objects.get()
    assert run.kind == "embedding" and run.preset == "cpu-smoke" and run.activate_on_success
    assert run.config["batch_size"] == 8
    assert {"/models/minilm", 2, 0.0001} <= set(run.config.values())


def test_it_answers_errors_in_the_one_shape(tv_kb: Any, api: Callable[..., Any]) -> None:
    response = api("POST", "/kbs/tv/training-runs", json.dumps({"kind": "reranker"}))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid"
    QAPair.objects.filter(kb=tv_kb).update(status="pending")
    response = api("POST", "/kbs/tv/training-runs", json.dumps({"kind": "generator"}))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "no_rows",
        "message": "No approved training rows in tv: review some pairs first",
        "details": {},
    }
    assert api("GET", "/training-runs/999").status_code == 404
    assert api("GET", "/kbs/nope/training-runs").status_code == 404
    assert not TrainingRun.objects.exists()


def test_it_cancels_and_resumes_a_run(tv_kb: Any, api: Callable[..., Any]) -> None:
    run_id = api("POST", "/kbs/tv/training-runs", json.dumps({"kind": "generator"})).json()["id"]
    response = api("POST", f"/training-runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = api("POST", f"/training-runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_active"
    response = api("POST", f"/training-runs/{run_id}/resume")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert TrainingRun.objects.get(pk=run_id).cancel_requested is False
    training_run_execute(run_id=run_id)
    done = api("POST", f"/training-runs/{run_id}/resume")
    assert done.status_code == 409 and done.json()["error"]["code"] == "succeeded"


def test_it_lists_and_activates_model_versions(tv_kb: Any, api: Callable[..., Any]) -> None:
    ids = [
        api("POST", "/kbs/tv/training-runs", json.dumps({"kind": "generator"})).json()["id"]
        for _ in range(2)
    ]
    for run_id in ids:
        training_run_execute(run_id=run_id)
    versions = api("GET", "/kbs/tv/model-versions").json()
    assert [v["run"] for v in versions] == ids[::-1]  # newest first
    assert not any(v["active"] for v in versions)
    assert versions[0]["is_adapter"] and versions[0]["base_model"] == "tiny-base"

    older = versions[1]["id"]
    response = api("POST", f"/model-versions/{older}/activate")
    assert response.status_code == 200, response.content
    assert response.json()["activated"] is True and response.json()["version"]["active"]
    active = active_version(kb=tv_kb, kind="generator")
    assert active is not None and active.pk == older
    flags = {v["id"]: v["active"] for v in api("GET", "/kbs/tv/model-versions").json()}
    assert flags == {versions[0]["id"]: False, older: True}

    response = api("POST", f"/model-versions/{older}/merge")
    assert response.status_code == 202 and response.json()["merge_status"] == "queued"
    assert api("POST", "/model-versions/999/activate").status_code == 404
