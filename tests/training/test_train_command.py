"""`manage.py train`: the last line printed is the JSON contract
``{"run", "status", "version", "metrics"}``, whether it queues or trains here (--wait)."""

from __future__ import annotations

import json
import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from corpus.models import QAPair
from training.models import ModelVersion, TrainingRun
from training.selectors import active_version

pytestmark = pytest.mark.django_db


def _train(*args: str) -> tuple[dict[str, Any], str]:
    out = StringIO()
    call_command("train", *args, stdout=out, stderr=StringIO())
    text = out.getvalue()
    return json.loads(text.strip().splitlines()[-1]), text


def test_it_trains_here_with_wait_and_prints_the_json_contract_last(tv_kb: Any) -> None:
    result, text = _train("tv", "--kind", "generator", "--wait")
    run = TrainingRun.objects.get()
    version = ModelVersion.objects.get(run=run)
    assert result == {
        "run": run.pk,
        "status": "succeeded",
        "version": version.pk,
        "metrics": {"train_loss": 0.3333, "eval_loss": 0.75, "steps": 6},
    }
    assert f"Run {run.pk}: 9 train / 1 eval rows" in text.splitlines()[0]
    assert active_version(kb=tv_kb, kind="generator") is None


def test_it_queues_without_wait(tv_kb: Any, django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result, _ = _train("tv", "--kind", "embedding")
    run = TrainingRun.objects.get()
    assert result == {"run": run.pk, "status": "queued", "version": None, "metrics": {}}
    assert run.kind == "embedding" and run.status == "queued" and run.attempts == 0
    assert len(callbacks) == 1, "the run was not handed to the worker"


def test_it_activates_the_new_version_with_activate(tv_kb: Any) -> None:
    result, _ = _train("tv", "--kind", "generator", "--wait", "--activate")
    assert result["status"] == "succeeded"
    active = active_version(kb=tv_kb, kind="generator")
    assert active is not None and active.pk == result["version"]


def test_it_passes_its_flags_into_the_config(tv_kb: Any) -> None:
    result, _ = _train(
        "tv",
        "--kind",
        "generator",
        "--method",
        "qlora",
        "--preset",
        "cpu-smoke",
        "--base-model",
        "/models/tiny",
        "--epochs",
        "2",
        "--lr",
        "0.0002",
        "--config",
        '{"lora_rank": 4}',
    )
    run = TrainingRun.objects.get(pk=result["run"])
    assert (run.method, run.preset) == ("qlora", "cpu-smoke")
    values = list(run.config.values())
    assert "/models/tiny" in values and 2 in values and 0.0002 in values
    assert run.config["lora_rank"] == 4 and run.config["kind"] == "generator"
    assert 2 in [v for v in values if type(v) is int], "whole epochs should stay an int"


def test_it_reports_a_failed_run_with_the_json_last_and_an_error(
    tv_kb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_FAIL_AT", "2")
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match=r"training run \d+ failed"):
        call_command("train", "tv", "--kind", "generator", "--wait", stdout=out, stderr=err)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["status"] == "failed" and result["version"] is None
    assert result["run"] == TrainingRun.objects.get().pk
    assert "exit code 1" in err.getvalue() and "CUDA out of memory at step 2" in err.getvalue()


def test_it_refuses_a_kb_without_approved_rows(tv_kb: Any) -> None:
    QAPair.objects.filter(kb=tv_kb).update(status="pending")
    with pytest.raises(CommandError, match="No approved training rows in tv: review some pairs"):
        _train("tv", "--kind", "generator", "--wait")
    with pytest.raises(CommandError, match="No knowledge base with slug 'nope'"):
        _train("nope", "--kind", "generator")
    assert not TrainingRun.objects.exists()


def test_it_waits_for_its_turn_behind_a_running_run_of_the_kb(
    tv_kb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.runner import training_run_claim
    from training.services import training_run_start

    first = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    assert training_run_claim(run_id=first.pk) is not None
    real_sleep = time.sleep

    def first_run_ends(seconds: float) -> None:
        # The first pause is the command waiting for its turn: the other run ends meanwhile.
        TrainingRun.objects.filter(pk=first.pk).update(status="succeeded")
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", first_run_ends)
    result, text = _train("tv", "--kind", "generator", "--wait")
    assert result["status"] == "succeeded" and result["run"] != first.pk
    assert text.count(f"Run {result['run']} is queued; waiting") == 1
