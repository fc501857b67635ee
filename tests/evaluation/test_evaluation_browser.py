"""The dashboard in a real Chromium: Chart.js and the chart script from this origin draw the
metric bars, the judge score distribution and the recall@k curve from the page's JSON, with no
console error and no CSP violation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from evaluation.models import EvalRun

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LABELS = ["emb=base,gen=base", "emb=active,gen=active"]


def _finished_run(kb: Any) -> EvalRun:
    def config(label: str, parse: float, judge: float | None, curve: list[float]) -> dict[str, Any]:
        metrics = {"recall@k": curve[-1], "parse_success": parse, "judge_hard": judge,
                   "judge_soft": judge, "f1": 0.5, "latency_p50_ms": 120.0}  # fmt: skip
        counts = {
            "parse_success": {"num": int(parse * 4), "den": 4},
            "judge_hard": {"num": 0, "den": 0, "reason": "judge unavailable: down"},
            "judge_scores": {"1": 1, "2": 0, "3": 1, "4": 2, "5": 0},
            "recall_curve": curve,
        }
        return {"config": label, "metrics": metrics, "counts": counts}

    return EvalRun.objects.create(
        kb=kb,
        source="eval split",
        configs=[{"label": label} for label in LABELS],
        status="succeeded",
        k=3,
        summary=[
            config(LABELS[0], 0.0, None, [0.25, 0.5, 0.75]),
            config(LABELS[1], 0.75, None, [0.5, 0.75, 1.0]),
        ],
    )


@pytest.mark.django_db(transaction=True)
def test_it_draws_the_dashboard_charts_in_a_browser(
    alice: Any, live_server: Any, browser_login: Callable[..., Any]
) -> None:
    from corpus.models import KnowledgeBase

    run = _finished_run(KnowledgeBase.objects.create(slug="tv", name="TV"))
    page = browser_login(live_server.url, "alice", "pw-alice")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(f"{live_server.url}{reverse('evaluation:run', args=[run.pk])}")
    assert response.status == 200
    page.wait_for_function("() => window.Chart && Chart.getChart('eval-recall')")
    drawn = page.evaluate(
        """() => ({
          bars: Chart.getChart('eval-bars').data.datasets.map(d => [d.label, d.data]),
          barLabels: Chart.getChart('eval-bars').data.labels,
          judge: Chart.getChart('eval-judge').data.datasets.map(d => d.data),
          recall: Chart.getChart('eval-recall').data.datasets.map(d => [d.label, d.data]),
        })"""
    )
    assert [label for label, _ in drawn["bars"]] == LABELS
    parse = drawn["barLabels"].index("parse_success")
    assert [data[parse] for _, data in drawn["bars"]] == [0.0, 0.75]
    assert drawn["judge"] == [[1, 0, 1, 2, 0], [1, 0, 1, 2, 0]]
    assert drawn["recall"] == [[LABELS[0], [0.25, 0.5, 0.75]], [LABELS[1], [0.5, 0.75, 1.0]]]
    # The best parse success is marked; the null judge cell says why.
    assert page.locator("tr[data-metric='parse_success'] td.best").count() == 1
    assert "judge unavailable: down" in page.locator("tr[data-metric='judge_hard']").inner_text()
    assert errors == []
