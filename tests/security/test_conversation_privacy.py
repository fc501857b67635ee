"""Conversation privacy over the WebSocket, beyond tests/chat/test_consumer.py (which covers
anonymous, no-role, another support user, the admin, a foreign origin and a KB restricted
after the fact): a reviewer, a support user of another group, and a socket on one's own
conversation trying to act on someone else's message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chat.models import Message
from raftweb.asgi import application
from tests.security.conftest import World, build_world

pytestmark = pytest.mark.django_db(transaction=True)


def _cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@asynccontextmanager
async def socket(conversation_id: int, user: Any) -> AsyncIterator[WebsocketCommunicator]:
    cookie = await sync_to_async(_cookie)(user)
    headers = [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"cookie", f"sessionid={cookie}".encode()),
    ]
    comm = WebsocketCommunicator(application, f"/ws/chat/{conversation_id}/", headers=headers)
    try:
        yield comm
    finally:
        await comm.disconnect()


@pytest.fixture
def ws_world(transactional_db: Any) -> World:
    return build_world()


@pytest.mark.parametrize("intruder, code", [("rita", 4403), ("victor", 4404), ("mallory", 4403)])
async def test_it_never_opens_someone_elses_conversation(
    intruder: str, code: int, ws_world: World
) -> None:
    w = ws_world
    async with socket(w.conversation.pk, w.users[intruder]) as comm:
        await comm.connect()
        # the close is the very first thing sent: no history of sam's conversation before it
        closed = await comm.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": code}


async def test_it_ignores_a_retry_of_a_message_from_another_conversation(ws_world: World) -> None:
    """susan, on her own conversation, names sam's failed answer: it must stay untouched."""
    from chat.services import conversation_create

    w = ws_world
    await Message.objects.filter(pk=w.answer.pk).aupdate(
        status=Message.Status.ERROR, error="model down"
    )
    own = await sync_to_async(conversation_create)(owner=w.users["susan"], kb=w.tv)
    async with socket(own.pk, w.users["susan"]) as comm:
        connected, _ = await comm.connect()
        assert connected
        restore = await comm.receive_from(timeout=5)
        assert "How do I reset it?" not in restore
        await comm.send_to(text_data=json.dumps({"action": "retry", "message_id": w.answer.pk}))
        notice = await comm.receive_from(timeout=5)
        assert "no longer exists" in notice
        await comm.send_to(text_data=json.dumps({"action": "stop"}))
        assert await comm.receive_nothing(timeout=0.2)
    answer = await Message.objects.aget(pk=w.answer.pk)
    assert answer.status == Message.Status.ERROR and answer.error == "model down"
    assert await Message.objects.filter(conversation=w.conversation).acount() == 2


async def test_it_restores_a_hostile_conversation_over_the_socket_as_text(
    transactional_db: Any,
) -> None:
    """On (re)connect the whole conversation is sent as HTML fragments: stored questions,
    model output, citations and document names carrying markup arrive escaped."""
    from tests.security.hostile import PAYLOAD, assert_safe

    w = await sync_to_async(build_world)(PAYLOAD)
    async with socket(w.conversation.pk, w.users["sam"]) as comm:
        connected, _ = await comm.connect()
        assert connected
        restore = await comm.receive_from(timeout=5)
    assert_safe(restore, "websocket restore")
