"""Hostile text everywhere a training page shows stored or script-written text: the KB name,
the config, the run's error and notes, log.txt, metrics.jsonl values and keys, final metrics,
and a version's label, paths, base model and merge error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.security.hostile import MARK, PAYLOAD, assert_safe
from training.models import ModelVersion, TrainingRun
from training.runner import training_run_tail
from training.services import training_run_start

pytestmark = pytest.mark.django_db


def test_it_escapes_everything_on_the_training_pages(
    engine_config: None, tv_kb: Any, alice: Any, client_for: Callable[[Any], Client]
) -> None:
    tv_kb.name = "TV" + PAYLOAD
    tv_kb.save()
    run = training_run_start(kb=tv_kb, kind="generator", overrides={"note": PAYLOAD}, enqueue=False)
    run_dir = Path(run.run_dir)
    (run_dir / "log.txt").write_text("Traceback:" + PAYLOAD + "\n")
    events = [
        {"event": "step", "step": 1, "total_steps": 2, "loss": PAYLOAD, PAYLOAD: 1},
        {"event": "eval" + PAYLOAD, "step": 1, "eval_loss": PAYLOAD},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    training_run_tail(run=run)
    TrainingRun.objects.filter(pk=run.pk).update(
        status="failed",
        error="boom" + PAYLOAD,
        notes=["note" + PAYLOAD],
        metrics={PAYLOAD: PAYLOAD},
    )
    ModelVersion.objects.create(
        kb=tv_kb,
        kind="generator",
        label="v" + PAYLOAD[:95],  # the column holds 100
        path="/runs" + PAYLOAD,
        base_model="base" + PAYLOAD,
        is_adapter=True,
        merge_status="failed",
        merge_error="merge" + PAYLOAD,
        metrics={"m" + PAYLOAD: PAYLOAD},
        run=run,
    )
    client = client_for(alice)
    htmx = {"HTTP_HX_REQUEST": "true"}
    pages = [
        (reverse("training:home"), {}),
        (reverse("training:home") + "?fragment=runs", htmx),
        (reverse("training:kb", args=["tv"]), {}),
        (reverse("training:kb", args=["tv"]) + "?fragment=runs", htmx),
        (reverse("training:run", args=[run.pk]), {}),
        (reverse("training:run", args=[run.pk]) + "?fragment=progress", htmx),
    ]
    for url, headers in pages:
        response = client.get(url, **headers)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert_safe(html, url)
        assert MARK in html, f"{url} dropped the data instead of escaping it"
    # The API's JSON carries the same text as data, never as markup in an HTML response.
    response = client.get(f"/api/training-runs/{run.pk}")
    assert response["Content-Type"].startswith("application/json")
