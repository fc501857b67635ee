"""A lone UTF-16 surrogate ("\\ud800", legal in JSON, not encodable as UTF-8) used to give a
500 on search, a 503 on chat completions and "Unexpected error" in the chat. It is now
replaced with U+FFFD where JSON comes in (the API's parser, the chat WebSocket), the way a
browser's TextEncoder does; the request is then answered like any other."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.models import Message
from tests.chat.conftest import (  # noqa: F401
    chat_kb,
    conversation_for,
    live_app,
    make_kb,
    student_llm,
)
from tests.chat.test_consumer import FINAL_RE, session_cookie, socket_for, until

# Raw JSON text: json.dumps would escape the surrogate the same way; written out to be plain.
LONE = "\\ud800"
REPLACED = "\ufffd"


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


@pytest.mark.django_db
def test_it_searches_with_a_lone_surrogate_in_the_query(
    sam,
    alice,
    chat_kb,  # noqa: F811
    api_token_for,
    client_for,
) -> None:
    headers = {"Authorization": f"Bearer {api_token_for(sam)}"}
    client = Client()
    body = '{"query": "' + LONE + ' reset the television"}'
    response = client.post(
        "/api/kbs/tv/search", body, content_type="application/json", headers=headers
    )
    assert response.status_code == 200, response.content[:300]
    assert response.json()[0]["text"].startswith("To reset the television")
    # Invalid UTF-8 bytes in a query string are replaced by Django itself.
    response = client.get("/api/kbs/tv/search?q=%ED%A0%80reset", headers=headers)
    assert response.status_code == 200
    # The same cleaning for every JSON body of the API, e.g. a knowledge base's name.
    created = client_for(alice).post(
        "/api/kbs", '{"name": "Manuals ' + LONE + '"}', content_type="application/json"
    )
    assert created.status_code == 201 and created.json()["name"] == "Manuals " + REPLACED


@pytest.mark.django_db(transaction=True)
def test_it_answers_a_chat_completion_with_a_lone_surrogate(
    sam,
    chat_kb,  # noqa: F811
    student_llm,  # noqa: F811
    api_token_for,
    live_app: str,  # noqa: F811
) -> None:
    body = (
        '{"model": "tv", "messages": [{"role": "user", "content": "'
        + LONE
        + ' How do I reset the television?"}]}'
    )
    response = httpx.post(
        f"{live_app}/api/v1/chat/completions",
        content=body,
        headers={
            "Authorization": f"Bearer {api_token_for(sam)}",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    answer = response.json()
    assert "To reset the television" in answer["choices"][0]["message"]["content"]
    assert answer["raft"]["question"] == REPLACED + " How do I reset the television?"
    sent = json.dumps(student_llm.requests[-1], ensure_ascii=False)
    assert REPLACED in sent and not has_surrogate(sent)


@pytest.mark.django_db(transaction=True)
async def test_it_answers_a_chat_question_with_a_lone_surrogate(
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
        await comm.send_to(
            text_data='{"action": "ask", "question": "' + LONE + ' How do I reset the television?"}'
        )
        frames = await until(comm, FINAL_RE.pattern)
    assert 'data-status="ok"' in frames[-1], frames[-1]
    assert "Unexpected error" not in "".join(frames)
    question = await Message.objects.aget(role="user")
    assert question.content == REPLACED + " How do I reset the television?"
    answer: Any = await Message.objects.aget(role="assistant")
    assert answer.final.startswith("To reset the television")
