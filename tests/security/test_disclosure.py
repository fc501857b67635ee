"""What the app tells about its insides: /api/health to anonymous callers, and the errors
support users see when a model server is down.

Anonymous /api/health used to list the host name, the worker's PID, paths, model server URLs
and model names, and probed every model server on every call; chat errors showed support
users the model server's internal URL.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import Client, override_settings

from chat.models import Message
from raftweb.core.services import profile_update
from raftweb.testing.scripted_llm import free_port
from tests.chat.conftest import (  # noqa: F401
    chat_kb,
    conversation_for,
    live_app,
    make_kb,
    student_llm,
)
from tests.chat.test_consumer import FINAL_RE, session_cookie, socket_for, until

COMPONENTS = {"status", "database", "worker", "vector_store", "models"}


class CountingModelServer:
    """A loopback OpenAI-compatible server that only lists models, and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.calls += 1
                body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def model_server(db: Any) -> Iterator[CountingModelServer]:
    server = CountingModelServer()
    profile_update(role="judge", user=None, backend="openai", model="m", base_url=server.url)
    try:
        yield server
    finally:
        server.close()


# ------------------------------------------------------------------------------- health


def test_it_tells_anonymous_callers_only_what_is_up(db: Any, model_server: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer rw_not-a-token"}):
        response = Client().get("/api/health", headers=headers)
        assert response.status_code in (200, 503)
        body = response.json()
        assert set(body) == COMPONENTS
        for part in ("database", "worker", "vector_store"):
            assert body[part] == {"ok": body[part]["ok"]}, body[part]
        assert set(body["models"]) == {"teacher", "judge", "student", "embedding"}
        assert body["models"]["judge"] == {"ok": True}
        text = response.content.decode()
        for secret in ("127.0.0.1", "sqlite", "postgresql", "Chroma", "/", "Qwen", "pid", "detail"):
            assert secret not in text, (secret, text)


def test_it_shows_details_to_users_and_server_addresses_to_admins(
    alice: Any, sam: Any, client_for: Any, model_server: Any
) -> None:
    admin = client_for(alice).get("/api/health").json()
    from django.db import connection

    assert admin["database"]["detail"].startswith(connection.vendor)
    assert model_server.url in admin["models"]["judge"]["detail"]
    assert admin["models"]["judge"]["data"]["model"] == "openai:m"
    support = client_for(sam).get("/api/health").json()
    assert support["database"]["detail"].startswith(connection.vendor)
    judge = support["models"]["judge"]
    assert judge["ok"] is True and "is up" in judge["detail"]
    assert "127.0.0.1" not in json.dumps(support), support


def test_it_probes_the_model_servers_at_most_every_few_seconds(
    db: Any, model_server: CountingModelServer
) -> None:
    client = Client()
    for _ in range(10):
        client.get("/api/health")
    assert model_server.calls == 1
    # A changed model profile is probed at once (the report names the profiles).
    profile_update(role="judge", user=None, model="m", timeout_s=30)
    client.get("/api/health")
    assert model_server.calls == 2
    # Once the report is older than RAFTWEB_HEALTH_CACHE_SECONDS, the next call probes again.
    with override_settings(HEALTH_CACHE_S=1):
        profile_update(role="judge", user=None, model="m", timeout_s=20)
        client.get("/api/health")
        client.get("/api/health")
        assert model_server.calls == 3
        time.sleep(1.2)
        client.get("/api/health")
        assert model_server.calls == 4


# ---------------------------------------------------------------------------- chat errors


def _down_server() -> str:
    url = f"http://127.0.0.1:{free_port()}/v1"
    profile_update(role="student", user=None, base_url=url)
    return url


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who, sees_address", [("sam", False), ("alice", True)])
async def test_it_keeps_the_model_servers_address_from_support_users_in_chat(
    who: str,
    sees_address: bool,
    sam: Any,
    alice: Any,
    chat_kb: Any,  # noqa: F811
    student_llm: Any,  # noqa: F811
    client_for: Any,
    conversation_for: Any,  # noqa: F811
    caplog: Any,
) -> None:
    user = {"sam": sam, "alice": alice}[who]
    url = await sync_to_async(_down_server)()
    address = url.split("//")[1].split("/")[0]  # 127.0.0.1:PORT
    conv = await sync_to_async(conversation_for)(user, chat_kb)
    with caplog.at_level("WARNING", logger="chat.services"):
        async with socket_for(
            conv.pk, await sync_to_async(session_cookie)(client_for, user)
        ) as comm:
            await comm.connect()
            await comm.receive_from()
            await comm.send_to(
                text_data=json.dumps({"action": "ask", "question": "How do I reset it?"})
            )
            frames = await until(comm, FINAL_RE.pattern)
    final = frames[-1]
    assert 'data-status="error"' in final and "unavailable" in final
    assert (address in final) is sees_address, final
    answer = await Message.objects.aget(role="assistant")
    assert (address in answer.error) is sees_address
    # The page shows the same stored text on reload.
    page = await sync_to_async(lambda: client_for(user).get(f"/chat/c/{conv.pk}/"))()
    assert page.status_code == 200
    assert (address in page.content.decode()) is sees_address
    # The log keeps the whole story.
    assert any(address in r.getMessage() for r in caplog.records)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who, sees_address", [("sam", False), ("alice", True)])
def test_it_keeps_the_model_servers_address_from_support_tokens(
    who: str,
    sees_address: bool,
    sam: Any,
    alice: Any,
    chat_kb: Any,  # noqa: F811
    student_llm: Any,  # noqa: F811
    api_token_for: Any,
    live_app: str,  # noqa: F811
) -> None:
    user = {"sam": sam, "alice": alice}[who]
    address = _down_server().split("//")[1].split("/")[0]
    for stream in (False, True):
        response = httpx.post(
            f"{live_app}/api/v1/chat/completions",
            content=json.dumps(
                {
                    "model": "tv",
                    "stream": stream,
                    "messages": [{"role": "user", "content": "How do I reset it?"}],
                }
            ),
            headers={
                "Authorization": f"Bearer {api_token_for(user)}",
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "unavailable"
        assert (address in error["message"]) is sees_address, error
        assert re.search(r"unavailable", error["message"])
