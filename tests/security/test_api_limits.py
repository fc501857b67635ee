"""Size bounds and per-user rate limits on search, chat and the OpenAI-compatible endpoint.

A 5 MB search query once took 3.9 s of server time and stalled search for everyone; nothing
limited how often a token could search or ask. Real requests: the Django test client for the
API, a WebSocket through the real ASGI application for the chat page.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client, override_settings

from chat.models import Message
from tests.chat.conftest import chat_kb, conversation_for, make_kb, student_llm  # noqa: F401
from tests.chat.test_consumer import FINAL_RE, session_cookie, socket_for, until


def api(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def search(client: Client, token: str, query: str) -> Any:
    return client.post(
        "/api/kbs/tv/search",
        json.dumps({"query": query}),
        content_type="application/json",
        headers=api(token),
    )


def completions(client: Client, token: str, messages: list[dict[str, Any]], model="tv") -> Any:
    return client.post(
        "/api/v1/chat/completions",
        json.dumps({"model": model, "messages": messages}),
        content_type="application/json",
        headers=api(token),
    )


def assert_too_long(response: Any, limit: str) -> dict[str, Any]:
    assert response.status_code == 422, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "too_long"
    assert f"the limit is {limit}" in error["message"]
    return error


# ------------------------------------------------------------------------------- bounds


@pytest.mark.django_db
def test_it_refuses_an_over_long_search_query_quickly(sam, chat_kb, api_token_for) -> None:  # noqa: F811
    token = api_token_for(sam)
    client = Client()
    assert search(client, token, "reset " * 333).status_code == 200  # 1,998 characters
    started = time.perf_counter()
    error = assert_too_long(search(client, token, "reset the tv " * 400_000), "2,000")
    assert time.perf_counter() - started < 2.0
    assert error["details"] == {"max_chars": 2000, "chars": 5_200_000}
    # The query-parameter form has the same bound.
    response = client.get("/api/kbs/tv/search", {"q": "x" * 2001}, headers=api(token))
    assert_too_long(response, "2,000")


@pytest.mark.django_db
def test_it_follows_the_configured_query_limit(sam, chat_kb, api_token_for) -> None:  # noqa: F811
    with override_settings(MAX_QUERY_CHARS=10):
        assert_too_long(search(Client(), api_token_for(sam), "reset the tv"), "10")


@pytest.mark.django_db
def test_it_bounds_the_openai_endpoints_messages(sam, chat_kb, api_token_for) -> None:  # noqa: F811
    token = api_token_for(sam)
    client = Client()
    long_question = [{"role": "user", "content": "x" * 4001}]
    assert_too_long(completions(client, token, long_question), "4,000")
    many = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] * 50
    many.append({"role": "user", "content": "and?"})
    response = completions(client, token, many)
    assert response.status_code == 422 and response.json()["error"]["code"] == "too_long"
    huge_history = [{"role": "assistant", "content": "y" * 150_000}] * 2
    response = completions(client, token, [*huge_history, {"role": "user", "content": "ok?"}])
    assert response.status_code == 422 and "the limit is 200,000" in response.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_it_refuses_an_over_long_chat_question_on_the_websocket(
    sam,
    chat_kb,  # noqa: F811
    student_llm,  # noqa: F811
    client_for,
    conversation_for,  # noqa: F811
) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        await comm.connect()
        await comm.receive_from()
        await comm.send_to(text_data=json.dumps({"action": "ask", "question": "q" * 4001}))
        frames = await until(comm, r'id="chat-notice"')
        assert "4,001 characters long; the limit is 4,000" in frames[-1]
        assert 'role="alert"' in frames[-1]
        # The socket still works.
        await comm.send_to(
            text_data=json.dumps({"action": "ask", "question": "How do I reset the television?"})
        )
        frames = await until(comm, FINAL_RE.pattern)
        assert 'data-status="ok"' in frames[-1]
    questions = [m.content async for m in Message.objects.filter(role="user")]
    assert questions == ["How do I reset the television?"]
    assert len(student_llm.requests) >= 1


# -------------------------------------------------------------------------- rate limits


@pytest.mark.django_db
def test_it_rate_limits_search_per_user(sam, rita, chat_kb, api_token_for, client_for) -> None:  # noqa: F811
    with override_settings(RATE_LIMITS={"search": "3/min", "chat": "off"}):
        token = api_token_for(sam)
        client = Client()
        assert [search(client, token, "reset").status_code for _ in range(3)] == [200] * 3
        limited = search(client, token, "reset")
        assert limited.status_code == 429
        assert 0 < int(limited["Retry-After"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limited"
        # A new token or the browser session of the same user share the budget...
        assert search(client, api_token_for(sam), "reset").status_code == 429
        browser = client_for(sam)
        assert browser.get("/api/kbs/tv/search", {"q": "reset"}).status_code == 429
        # ...other users have their own.
        assert search(client, api_token_for(rita), "reset").status_code == 200


@pytest.mark.django_db
def test_it_rate_limits_the_openai_endpoint_per_user(sam, chat_kb, api_token_for) -> None:  # noqa: F811
    question = [{"role": "user", "content": "How do I reset it?"}]
    with override_settings(RATE_LIMITS={"search": "off", "chat": "2/hour"}):
        token = api_token_for(sam)
        client = Client()
        # Calls that fail still cost (404: a KB that does not exist).
        assert completions(client, token, question, model="nope").status_code == 404
        assert completions(client, token, question, model="nope").status_code == 404
        limited = completions(client, token, question)
        assert limited.status_code == 429
        assert 0 < int(limited["Retry-After"]) <= 3600


@pytest.mark.django_db(transaction=True)
async def test_it_rate_limits_chat_questions_on_the_websocket(
    sam,
    chat_kb,  # noqa: F811
    student_llm,  # noqa: F811
    client_for,
    conversation_for,  # noqa: F811
) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    with override_settings(RATE_LIMITS={"search": "off", "chat": "1/min"}):
        async with socket_for(
            conv.pk, await sync_to_async(session_cookie)(client_for, sam)
        ) as comm:
            await comm.connect()
            await comm.receive_from()
            question = {"action": "ask", "question": "How do I reset the television?"}
            await comm.send_to(text_data=json.dumps(question))
            frames = await until(comm, FINAL_RE.pattern)
            assert 'data-status="ok"' in frames[-1]
            await comm.send_to(text_data=json.dumps(question))
            frames = await until(comm, r'id="chat-notice"[^>]*>Too many')
            assert "ask again in" in frames[-1]
    assert await Message.objects.filter(role="user").acount() == 1


def test_it_has_sensible_default_rates() -> None:
    from django.conf import settings

    from raftweb.core.rates import parse_rate

    assert parse_rate(settings.RATE_LIMITS["search"]) == (120, 60)
    assert parse_rate(settings.RATE_LIMITS["chat"]) == (30, 60)
    assert parse_rate("100/10s") == (100, 10) and parse_rate("off") is None
    with pytest.raises(ValueError, match="N/period"):
        parse_rate("fast")
