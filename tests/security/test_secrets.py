"""Endpoint API keys (model profiles) are never rendered in pages or API answers, and never
logged — even when a model server echoes the key back in its error, as some proxies and hosted
APIs do ("Incorrect API key provided: sk-…")."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from django.test import Client

from raftweb.core.services import profile_spec, profile_update
from raftweb.llm import ChatMessage, backend_class
from raftweb.llm.base import LLMError
from raftweb.testing.scripted_llm import free_port

SECRET = "sk-live-0123456789abcdefSECRET"


class EchoingServer:
    """An OpenAI-compatible server on loopback that answers every call with ``status`` and an
    error message that repeats the Authorization header it got."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _any(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        message = f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"
        return web.json_response(
            {"error": {"message": message, "type": "invalid_request_error"}}, status=self.status
        )

    def start(self) -> EchoingServer:
        def run() -> None:
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._any)
            self.runner = web.AppRunner(app)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            self.started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.started.wait(10), "echo server did not start"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(params=[401, 500], ids=["refused", "server-error"])
def echoing(request: Any) -> Iterator[EchoingServer]:
    server = EchoingServer(request.param).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keyed_student(alice: Any, echoing: EchoingServer, settings: Any) -> EchoingServer:
    profile_update(
        role="student",
        user=alice,
        backend="openai",
        model="m",
        base_url=echoing.base_url,
        api_key=SECRET,
        timeout_s=3,
    )
    return echoing


def test_it_never_renders_the_key_in_pages_or_the_api(alice: Any, keyed_student: Any) -> None:
    client = Client()
    client.force_login(alice)
    for url in ("/settings/models/", "/settings/models/student/", "/settings/models/status/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert SECRET not in response.content.decode(), url
        assert SECRET[-10:] not in response.content.decode(), url
    from raftweb.core.services import token_create

    raw = token_create(user=alice, name="t")[1]
    api = Client().get("/api/model-profiles", headers={"Authorization": f"Bearer {raw}"})
    assert api.status_code == 200 and SECRET not in api.content.decode()
    assert {p["role"]: p["has_api_key"] for p in api.json()}["student"] is True


def test_it_never_logs_the_key_when_a_call_fails(
    alice: Any, keyed_student: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level: openai and httpx included
    spec = dataclasses.replace(
        profile_spec("student"), max_retries=1, extra={"retry_base_s": 0.01, "retry_max_s": 0.02}
    )

    async def call() -> str:
        backend = backend_class("openai")(spec)
        try:
            await backend.complete([ChatMessage("user", "hello")])
        except LLMError as exc:
            logging.getLogger("raftweb.test").exception("the call failed")
            return str(exc)
        finally:
            await backend.aclose()
        raise AssertionError("the call should have failed")

    message = asyncio.run(call())
    assert "Incorrect API key provided" in message  # the server's reason still reaches the user
    assert SECRET not in message and SECRET[-10:] not in message
    logged = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert "Incorrect API key provided" in logged
    assert SECRET not in logged and SECRET[-10:] not in logged
