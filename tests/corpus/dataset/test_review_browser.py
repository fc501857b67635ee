"""A reviewer in a real Chromium: keyboard shortcuts approve and advance; the agreement page
draws its Chart.js histogram."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_it_reviews_with_the_keyboard_and_draws_the_agreement_chart(
    transactional_db: Any, live_server: Any, rita: Any, make_pair: Any, browser_login: Any
) -> None:
    from corpus.models import QAPair

    first = make_pair(question="First question about power?")
    second = make_pair(question="Second question about power?")
    page = browser_login(live_server.url, "rita", "pw-rita")
    page.goto(f"{live_server.url}/review/?kb=manual")
    page.click("text=First question about power?")
    page.wait_for_selector("#review-form")
    assert page.locator("mark.quote-ok").count() == 1
    page.keyboard.press("a")
    page.wait_for_url(f"**/review/pair/{second.pk}/**")
    assert QAPair.objects.get(pk=first.pk).status == "approved"
    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.id") == "id_question"
    page.keyboard.press("r")  # typing in the edit box is not a shortcut
    assert QAPair.objects.get(pk=second.pk).status == "pending"
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("r")
    page.wait_for_selector("#pair-status >> text=rejected")
    assert QAPair.objects.get(pk=second.pk).status == "rejected"

    for score, status in [(5, "approved")] * 6 + [(2, "rejected")] * 5:
        make_pair(judge_score=score, status=status, reviewed_by=rita)
    page.goto(f"{live_server.url}/review/agreement/?kb=manual")
    # A function, not an expression string: the page's CSP forbids eval (no 'unsafe-eval').
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('score-histogram'))"
    )
    data = page.evaluate(
        "Chart.getChart(document.getElementById('score-histogram')).data.datasets.map(d => d.data)"
    )
    # the two pairs reviewed above (judge score 4) count too: one approved, one rejected
    assert data == [[0, 0, 0, 1, 6], [0, 5, 0, 1, 0]]


def test_it_keeps_the_queue_filter_apart_from_the_pairs_split(
    transactional_db: Any, live_server: Any, rita: Any, make_pair: Any, browser_login: Any
) -> None:
    """Approving a train pair with `a` opens the next pair of the queue as filtered (here: not
    at all), even when that pair is in the eval split: the pair page's own `split` field is
    not a queue filter."""
    from corpus.models import QAPair

    first = make_pair(question="A train question?", split="train")
    second = make_pair(question="An eval question?", split="eval")
    page = browser_login(live_server.url, "rita", "pw-rita")
    page.goto(f"{live_server.url}/review/?kb=manual&status=pending")
    page.click("text=A train question?")
    page.wait_for_selector("#review-form")
    page.keyboard.press("a")
    page.wait_for_url(f"**/review/pair/{second.pk}/**")
    assert "split=" not in page.url and "status=pending" in page.url
    assert QAPair.objects.get(pk=first.pk).status == "approved"
    page.click("#back-to-queue")
    page.wait_for_selector("#queue")
    assert page.locator("#f-split").input_value() == ""
    assert page.locator("#queue tbody tr").count() == 1  # only the eval pair is still pending
