"""A support user chats in a real Chromium: the answer streams in pieces, a citation opens its
source with the quote highlighted."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Records every distinct length of the streaming answer text, so the test can tell an answer
# that arrived in pieces from one that appeared at once.
RECORD_PIECES = """
window.__pieces = [];
new MutationObserver(function () {
  document.querySelectorAll('.answer-stream').forEach(function (el) {
    var n = el.textContent.length;
    var last = window.__pieces[window.__pieces.length - 1];
    if (n > 0 && n !== last) { window.__pieces.push(n); }
  });
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def test_it_streams_an_answer_and_opens_the_cited_source(
    sam, chat_kb, student_llm, live_app, browser_login
) -> None:
    student_llm.token_delay_s = 0.03
    page = browser_login(live_app, "sam", "pw-sam")
    page.goto(f"{live_app}/chat/")
    page.click("#chat-kbs button[type=submit]")
    page.wait_for_url("**/chat/c/*/")
    page.evaluate(RECORD_PIECES)
    page.wait_for_selector("#chat-connection[data-state=open]")
    page.wait_for_selector("#ask-button:not([disabled])")

    page.fill("#chat-question", "How do I reset the television?")
    page.press("#chat-question", "Enter")
    page.wait_for_selector(".msg-user >> text=How do I reset the television?")
    page.wait_for_selector("article.msg-assistant[data-status=ok]", timeout=20_000)

    pieces = page.evaluate("window.__pieces")
    assert len(pieces) >= 5, f"the answer should arrive in several pieces, saw lengths {pieces}"
    assert pieces == sorted(pieces)
    final = page.inner_text("article.msg-assistant .answer-final")
    assert "To reset the television" in final
    assert page.input_value("#chat-question") == ""

    page.click("ol.citations a.cite-link")
    page.wait_for_url("**/chat/source/**")
    assert page.inner_text("#source-title") == "manual.txt"
    marked = page.inner_text("mark#quote-0")
    assert marked.startswith("To reset the television, hold the power button")


def open_new_conversation(page, live_app: str) -> None:
    page.goto(f"{live_app}/chat/")
    page.click("#chat-kbs button[type=submit]")
    page.wait_for_url("**/chat/c/*/")
    page.wait_for_selector("#ask-button:not([disabled])")


def test_it_stops_an_answer_and_answers_again(
    sam, chat_kb, student_llm, live_app, browser_login
) -> None:
    student_llm.token_delay_s = 0.05
    student_llm.answer_override = (
        "##Reason: " + " ".join(f"w{i}" for i in range(400)) + " <ANSWER>: x"
    )
    page = browser_login(live_app, "sam", "pw-sam")
    open_new_conversation(page, live_app)
    page.fill("#chat-question", "How do I reset the television?")
    page.click("#ask-button")
    # A function, not an expression string: the page's CSP forbids eval (no 'unsafe-eval').
    page.wait_for_function(
        "() => document.querySelector('.answer-stream') && "
        "document.querySelector('.answer-stream').textContent.length > 30"
    )
    page.click("#stop-button")
    page.wait_for_selector("article.msg-assistant[data-status=cancelled]")
    page.wait_for_selector("#stop-button", state="hidden")

    student_llm.answer_override = None
    student_llm.token_delay_s = 0.005
    page.click("article.msg-assistant button[data-retry]")
    page.wait_for_selector("article.msg-assistant[data-status=ok]")
    assert "To reset the television" in page.inner_text("article.msg-assistant .answer-final")


def test_it_shows_an_inline_error_with_a_working_retry_button(
    sam, chat_kb, student_llm, live_app, browser_login
) -> None:
    from raftweb.core.services import profile_update
    from raftweb.testing.scripted_llm import free_port

    profile_update(role="student", user=None, base_url=f"http://127.0.0.1:{free_port()}/v1")
    page = browser_login(live_app, "sam", "pw-sam")
    open_new_conversation(page, live_app)
    page.fill("#chat-question", "How do I reset the television?")
    page.press("#chat-question", "Enter")
    page.wait_for_selector("article.msg-assistant[data-status=error]", timeout=30_000)
    assert "unavailable" in page.inner_text("article.msg-assistant .answer-error")

    profile_update(role="student", user=None, base_url=student_llm.base_url)
    page.click("article.msg-assistant button[data-retry]")
    page.wait_for_selector("article.msg-assistant[data-status=ok]")
    assert page.locator("article.msg-assistant").count() == 1


def test_a_model_known_to_be_unavailable_fails_at_once_with_a_plain_apology(
    sam, chat_kb, student_llm, live_app, browser_login, monkeypatch
) -> None:
    """A hub id with no hub reachable: health already says so, so the answer fails at once
    (not after the hub client's retries), support staff get an apology without the profile to
    fix, and the sidebar entry takes the first question's name."""
    from huggingface_hub import constants

    from raftweb.core.services import profile_update
    from raftweb.testing.scripted_llm import free_port

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    profile_update(role="student", user=None, backend="hf", model="raftweb-tests/not-cached")
    page = browser_login(live_app, "sam", "pw-sam")
    open_new_conversation(page, live_app)
    assert page.inner_text("ul.conversation-list li.current").startswith("Untitled")
    page.fill("#chat-question", "Why is the screen dark?")
    page.press("#chat-question", "Enter")
    page.wait_for_selector("article.msg-assistant[data-status=error]", timeout=8_000)
    error = page.inner_text("article.msg-assistant .answer-error")
    assert "unavailable right now" in error and "try again" in error
    assert "profile" not in error and "not-cached" not in error
    assert page.inner_text("ul.conversation-list li.current a") == "Why is the screen dark?"
