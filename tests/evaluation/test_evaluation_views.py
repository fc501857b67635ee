"""The dashboard and its pages over a real finished run: the matrix (best marked, counts, nulls
with reasons), chart data without inline scripts, drill-down, the side-by-side question view
(untrusted text escaped), CSV/JSON export, compare, the printable report, and starting a run."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest

from evaluation.models import EvalQuestion, EvalRun
from evaluation.runner import eval_run_execute
from evaluation.services import eval_run_start
from raftweb.eval.configs import parse_configs
from raftweb.eval.questions import parse_question_lines

pytestmark = pytest.mark.django_db

HOSTILE = "<img src=x onerror=alert(1)> How do I reset the television?"


@pytest.fixture
def finished_run(eval_kb: Any, student_llm: Any, judge_scripted: Any) -> EvalRun:
    lines = [
        {"question": HOSTILE, "answer": "=HYPERLINK(\"http://evil\")", "gold": ["reset#1.txt"]},
        {"question": "What does the warranty cover?", "answer": "two years of normal use",
         "gold": ["warranty.txt"]},
    ]  # fmt: skip
    items = parse_question_lines("".join(json.dumps(x) + "\n" for x in lines)).items
    run = eval_run_start(
        kb=eval_kb,
        configs=parse_configs(["emb=base,gen=base", "emb=base,gen=base,mode=bm25,k=1"]),
        items=items,
        enqueue=False,
    )
    return eval_run_execute(run_id=run.pk)


def _scripts_are_external(html: str) -> None:
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag


def test_it_renders_the_dashboard_for_admins_and_reviewers(
    finished_run: EvalRun, client_for: Any, alice: Any, rita: Any
) -> None:
    assert finished_run.status == "succeeded"
    for user in (alice, rita):
        response = client_for(user).get(f"/evaluation/runs/{finished_run.pk}/")
        assert response.status_code == 200
        html = response.content.decode()
        assert "emb=base,gen=base,mode=bm25,k=1" in html and 'id="eval-matrix"' in html
        assert 'class="best"' in html  # the best of a row is marked
        assert "2 / 2" in html  # counts behind the parse-success share
        assert "no multiple-choice question" in html  # a null with its reason, not 0
        assert 'id="eval-chart-data"' in html and "evaluation-charts.js" in html
        _scripts_are_external(html)
        data = json.loads(
            re.search(
                r'id="eval-chart-data" type="application/json">(.*?)</script>', html, re.S
            ).group(1)  # type: ignore[union-attr]
        )
        assert data["labels"] == finished_run.labels and len(data["recall_curve"]) == 2
    admin_html = client_for(alice).get(f"/evaluation/kb/{finished_run.kb.slug}/").content
    reviewer_html = client_for(rita).get(f"/evaluation/kb/{finished_run.kb.slug}/").content
    assert b'id="eval-form"' in admin_html and b'id="eval-form"' not in reviewer_html


def test_it_drills_down_to_questions_and_shows_answers_side_by_side(
    finished_run: EvalRun, client_for: Any, alice: Any
) -> None:
    client = client_for(alice)
    cell = client.get(f"/evaluation/runs/{finished_run.pk}/cell/0/parse_success/")
    assert cell.status_code == 200
    question = EvalQuestion.objects.get(run=finished_run, ordinal=0)
    assert f"/evaluation/runs/{finished_run.pk}/questions/{question.pk}/" in cell.content.decode()
    assert b"<img src=x" not in cell.content
    page = client.get(f"/evaluation/runs/{finished_run.pk}/questions/{question.pk}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    assert html.count('class="card eval-column"') == 2  # both configurations side by side
    assert 'class="quote-ok"' in html  # the scripted answer's quote was verified
    assert "Clear question, faithful answer." in html  # the judge's reason
    assert client.get(f"/evaluation/runs/{finished_run.pk}/cell/9/f1/").status_code == 404


def test_it_exports_csv_and_json_and_compares_and_prints(
    finished_run: EvalRun, client_for: Any, alice: Any
) -> None:
    client = client_for(alice)
    response = client.get(f"/evaluation/runs/{finished_run.pk}/export.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 4 and {r["config"] for r in rows} == set(finished_run.labels)
    assert all(not r["gold_answer"].startswith("=") for r in rows)  # no spreadsheet formula
    body = client.get(f"/evaluation/runs/{finished_run.pk}/export.json").json()
    assert body["run"] == finished_run.pk and len(body["results"]) == 4
    assert [c["config"] for c in body["configs"]] == finished_run.labels
    assert client.get(f"/evaluation/runs/{finished_run.pk}/export.xml").status_code == 404
    compare = client.get(f"/evaluation/compare/?a={finished_run.pk}&b={finished_run.pk}")
    assert compare.status_code == 200 and b'id="eval-compare"' in compare.content
    report = client.get(f"/evaluation/runs/{finished_run.pk}/report/")
    assert report.status_code == 200 and b'id="eval-report"' in report.content


def test_it_starts_a_run_from_the_page_and_shows_live_progress(
    eval_kb: Any, client_for: Any, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            f"/evaluation/kb/{eval_kb.slug}/",
            {"configs": "emb=base,gen=base\nemb=active,gen=active", "mode": "bm25", "k": "3"},
        )
    run = EvalRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/evaluation/runs/{run.pk}/"
    assert run.total_units == 8 and len(callbacks) == 1
    fragment = client.get(f"/evaluation/runs/{run.pk}/?fragment=progress", HTTP_HX_REQUEST="true")
    assert b'hx-trigger="every 2s"' in fragment.content and b"Cancel" in fragment.content
    bad = client.post(
        f"/evaluation/kb/{eval_kb.slug}/", {"configs": "gen=version:77", "k": "3", "mode": "bm25"}
    )
    assert bad.status_code == 400 and b"no generator version 77" in bad.content
    assert EvalRun.objects.count() == 1
