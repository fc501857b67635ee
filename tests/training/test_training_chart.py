"""The run page's loss chart: Chart.js and the chart script come from this origin, the metrics
endpoint has the points, and in Chromium the chart is drawn from them without console errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from training.models import TrainingMetric, TrainingRun

TRAIN = [(1, 2.5, 1e-4), (2, 2.1, 9e-5), (3, 1.8, 8e-5), (4, 1.6, 7e-5), (5, 1.5, 6e-5)]
EVALS = [(3, 1.9), (5, 1.7)]


def _run_with_metrics(kb: Any, status: str = TrainingRun.Status.SUCCEEDED) -> TrainingRun:
    run = TrainingRun.objects.create(
        kb=kb, kind="generator", status=status, step=5, total_steps=5, config={"kind": "generator"}
    )
    line = 0
    for step, loss, lr in TRAIN:
        TrainingMetric.objects.create(
            run=run,
            line=line,
            event="step",
            step=step,
            values={"step": step, "loss": loss, "learning_rate": lr},
        )
        line += 1
        for eval_step, eval_loss in EVALS:
            if eval_step == step:
                TrainingMetric.objects.create(
                    run=run,
                    line=line,
                    event="eval",
                    step=step,
                    values={"step": step, "eval_loss": eval_loss},
                )
                line += 1
    return run


@pytest.mark.django_db
def test_it_includes_the_vendored_chart_from_this_origin(
    tv_kb: Any, alice: Any, client_for: Callable[[Any], Client]
) -> None:
    run = _run_with_metrics(tv_kb, status=TrainingRun.Status.RUNNING)
    page = client_for(alice).get(reverse("training:run", args=[run.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert '<script src="/static/vendor/chart.umd.min.js" defer></script>' in html
    assert '<script src="/static/js/training-chart.js" defer></script>' in html
    assert "cdn" not in html.lower() and "<script>" not in html
    metrics_url = f"/api/training-runs/{run.pk}/metrics"
    assert f'data-metrics-url="{metrics_url}"' in html and 'data-run-status="running"' in html


@pytest.mark.django_db
def test_it_serves_the_points_the_chart_draws(
    tv_kb: Any, alice: Any, client_for: Callable[[Any], Client]
) -> None:
    run = _run_with_metrics(tv_kb)
    response = client_for(alice).get(f"/api/training-runs/{run.pk}/metrics")
    assert response.status_code == 200
    series = response.json()
    assert series["status"] == "succeeded"
    assert [(p["step"], p["loss"], p["learning_rate"]) for p in series["train"]] == TRAIN
    assert [(p["step"], p["eval_loss"]) for p in series["eval"]] == EVALS


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_draws_the_loss_chart_in_a_browser(
    tv_kb: Any, alice: Any, live_server: Any, browser_login: Callable[..., Any]
) -> None:
    run = _run_with_metrics(tv_kb, status=TrainingRun.Status.RUNNING)
    page = browser_login(live_server.url, "alice", "pw-alice")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}{reverse('training:run', args=[run.pk])}")
    page.wait_for_selector("#loss-chart[data-points='5']")
    drawn = page.evaluate(
        """() => {
          const chart = Chart.getChart('loss-chart');
          return chart.data.datasets.map(d => [d.label, d.data.map(p => [p.x, p.y])]);
        }"""
    )
    assert drawn == [
        ["train loss", [[s, loss] for s, loss, _ in TRAIN]],
        ["eval loss", [[s, loss] for s, loss in EVALS]],
        ["learning rate", [[s, lr] for s, _, lr in TRAIN]],
    ]
    # Still running: the chart polls, and picks up a new step and the end of the run.
    TrainingMetric.objects.create(
        run=run, line=100, event="step", step=6, values={"loss": 1.4, "learning_rate": 5e-5}
    )
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    page.wait_for_selector("#loss-chart[data-points='6'][data-run-status='succeeded']")
    assert errors == []
