"""Training pages: the overview, a KB's runs / new-run form / versions, a run's progress
(an htmx fragment), and the buttons. Untrusted text (the log, the error) is escaped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from corpus.models import QAPair
from training.models import ModelVersion, TrainingRun
from training.runner import training_run_execute
from training.selectors import active_version
from training.services import training_run_start

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def browser(alice: Any, client_for: Callable[[Any], Client]) -> Client:
    return client_for(alice)


def test_it_shows_every_kbs_training_state(tv_kb: Any, browser: Client) -> None:
    run = training_run_execute(
        run_id=training_run_start(kb=tv_kb, kind="generator", activate=True).pk
    )
    assert run is not None
    page = browser.get(reverse("training:home"))
    assert page.status_code == 200
    html = page.content.decode()
    assert reverse("training:kb", args=["tv"]) in html
    assert "10 train / 2 eval" in html and "(1 from feedback)" in html
    assert f"generator-run-{run.pk}" in html  # the active generator
    assert reverse("training:run", args=[run.pk]) in html


def test_it_starts_a_run_from_the_kb_page(tv_kb: Any, browser: Client) -> None:
    url = reverse("training:kb", args=["tv"])
    page = browser.get(url)
    assert page.status_code == 200 and 'id="training-form"' in page.content.decode()
    response = browser.post(
        url, {"kind": "generator", "method": "lora", "epochs": "2", "overrides": '{"lora_rank": 4}'}
    )
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "training:run", args=[run.pk]
    )
    assert run.method == "lora" and run.config["lora_rank"] == 4 and 2 in run.config.values()
    assert run.created_by is not None and run.created_by.username == "alice"


def test_it_shows_why_a_run_cannot_start(tv_kb: Any, browser: Client) -> None:
    url = reverse("training:kb", args=["tv"])
    bad_json = browser.post(url, {"kind": "generator", "overrides": "[1, 2"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.content.decode()
    QAPair.objects.filter(kb=tv_kb).update(status="pending")
    response = browser.post(url, {"kind": "generator"})
    assert response.status_code == 400
    assert "No approved training rows in tv: review some pairs first" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_it_refreshes_the_runs_table_while_a_run_is_active(tv_kb: Any, browser: Client) -> None:
    run = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    url = reverse("training:kb", args=["tv"])
    fragment = browser.get(url + "?fragment=runs", **HTMX).content.decode()
    assert fragment.lstrip().startswith('<div id="training-runs" hx-get=')
    assert "<html" not in fragment and f"#{run.pk}" in fragment
    training_run_execute(run_id=run.pk)
    fragment = browser.get(url + "?fragment=runs", **HTMX).content.decode()
    assert "hx-get" not in fragment, "a finished table keeps polling"


def test_it_shows_a_runs_progress_log_and_metrics(
    tv_kb: Any, browser: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_FAIL_AT", "4")
    run = training_run_execute(run_id=training_run_start(kb=tv_kb, kind="generator").pk)
    assert run is not None and run.status == "failed"
    page = browser.get(reverse("training:run", args=[run.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert f'data-metrics-url="/api/training-runs/{run.pk}/metrics"' in html
    assert 'id="loss-chart"' in html
    # The script's traceback is in the error and the log tail: escaped, never markup.
    assert "<script>alert(1)</script>" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2
    assert html.count("<tr><td>") >= 3  # the metrics table: steps 1..3
    assert reverse("training:run_resume", args=[run.pk]) in html
    fragment = browser.get(reverse("training:run", args=[run.pk]) + "?fragment=progress", **HTMX)
    text = fragment.content.decode()
    assert text.lstrip().startswith('<div class="card" id="run-progress"') and "<html" not in text
    assert "hx-get" not in text  # failed: nothing more to poll


def test_it_cancels_resumes_and_activates_with_the_buttons(tv_kb: Any, browser: Client) -> None:
    run = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    page = browser.get(reverse("training:run", args=[run.pk])).content.decode()
    assert (
        'hx-get="/training/runs/' in page and reverse("training:run_cancel", args=[run.pk]) in page
    )
    response = browser.post(reverse("training:run_cancel", args=[run.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == "cancelled"
    browser.post(reverse("training:run_resume", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == "queued"
    training_run_execute(run_id=run.pk)
    version = ModelVersion.objects.get(run=run)
    kb_page = browser.get(reverse("training:kb", args=["tv"])).content.decode()
    assert reverse("training:version_activate", args=[version.pk]) in kb_page
    response = browser.post(reverse("training:version_activate", args=[version.pk]))
    assert response.status_code == 302
    assert active_version(kb=tv_kb, kind="generator") == version
    kb_page = browser.get(reverse("training:kb", args=["tv"])).content.decode()
    assert reverse("training:version_activate", args=[version.pk]) not in kb_page
    assert "active</span>" in kb_page


def test_it_keeps_the_pages_from_other_roles(
    tv_kb: Any, rita: Any, sam: Any, client_for: Callable[[Any], Client]
) -> None:
    for user in (rita, sam):
        client = client_for(user)
        assert client.get(reverse("training:home")).status_code == 403
        assert (
            client.post(reverse("training:kb", args=["tv"]), {"kind": "generator"}).status_code
            == 403
        )
    assert not TrainingRun.objects.exists()
