"""The Content-Security-Policy in a real Chromium: an admin walks through the app (pages,
htmx polling, the chat WebSocket, Chart.js, the API docs) and the browser reports no
violation — so nothing the app needs was blocked, and nothing inline was left behind."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.chat.conftest import chat_kb, live_app, make_kb, student_llm  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def watch(page: Any) -> list[str]:
    problems: list[str] = []
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    return problems


def test_it_runs_every_part_of_the_app_under_the_policy(
    alice: Any,
    chat_kb: Any,  # noqa: F811
    student_llm: Any,  # noqa: F811
    live_app: str,  # noqa: F811
    browser_login: Any,
) -> None:
    page = browser_login(live_app, "alice", "pw-alice")
    problems = watch(page)
    for url in (
        reverse("core:home"),
        reverse("corpus:kb_list"),
        reverse("corpus:kb_detail", args=[chat_kb.slug]),
        reverse("corpus:kb_search", args=[chat_kb.slug]) + "?q=reset",
        reverse("review:queue"),
        reverse("review:history"),
        reverse("review:agreement"),
        reverse("generation:list"),
        reverse("training:home"),
        reverse("core:profiles"),
        reverse("core:tokens"),
    ):
        response = page.goto(f"{live_app}{url}")
        assert response.status == 200, url
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")

    # Chat: the WebSocket (connect-src), streaming fragments, the citation's source page.
    page.goto(f"{live_app}/chat/")
    page.click("#chat-kbs button[type=submit]")
    page.wait_for_url("**/chat/c/*/")
    page.wait_for_selector("#chat-connection[data-state=open]")
    page.fill("#chat-question", "How do I reset the television?")
    page.press("#chat-question", "Enter")
    page.wait_for_selector("article.msg-assistant[data-status=ok]", timeout=20_000)
    conversation = page.url
    page.click("ol.citations a.cite-link")
    page.wait_for_url("**/chat/source/**")
    page.wait_for_selector("mark#quote-0")
    # The quote is scrolled into view by static/js/app.js (was an inline script).
    assert page.evaluate(
        "() => { const r = document.getElementById('quote-0').getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= window.innerHeight; }"
    )

    # Deleting asks first (data-confirm, was an inline onsubmit handler).
    page.goto(conversation)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#delete-conversation")
    page.wait_for_timeout(300)
    assert page.url == conversation
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-conversation")
    page.wait_for_url(lambda url: url != conversation)

    # The API docs: Swagger UI from our static files.
    page.goto(f"{live_app}/api/docs")
    page.wait_for_selector(".swagger-ui .info", timeout=20_000)

    assert not problems, problems
