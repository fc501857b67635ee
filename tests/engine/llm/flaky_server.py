"""A real OpenAI-compatible HTTP server on loopback whose answers follow a script.

For the behaviour a real model server shows only now and then (429, 5xx, slowness, missing
usage), so the ``openai`` backend's retries, backoff and limits are tested over real HTTP.
Runs aiohttp on its own thread and loop, so sync and async tests can use it alike.

Each request takes the next step of ``script`` (the last step repeats):
``200`` (answer), ``"no-usage"`` (answer, streamed without usage), ``"fail-mid-stream"``
(two pieces, then an error event), ``"garbage-mid-stream"`` (two pieces, then a chunk that
is not a chat completion chunk), ``"truncated-json"`` (a 200 whose JSON body is cut in
half), ``"no-choices"`` (a 200 with ``choices: []``), an int status
(an error body with that status), ``("slow", seconds)`` (answer after a delay).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ANSWER = "The refund takes five business days."


@dataclass
class FlakyServer:
    script: list[Any] = field(default_factory=lambda: [200])
    port: int = 0
    hits: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    hit_times: list[float] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _step(self) -> Any:
        index = min(self.hits, len(self.script) - 1)
        self.hits += 1
        self.hit_times.append(time.monotonic())
        return self.script[index]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        step = self._step()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if isinstance(step, tuple) and step[0] == "slow":
                await asyncio.sleep(step[1])
            elif isinstance(step, int) and step != 200:
                headers = {"Retry-After": "0"} if step == 429 else {}
                return web.json_response(
                    {"error": {"message": f"scripted {step}", "type": "scripted"}},
                    status=step,
                    headers=headers,
                )
            if step == "truncated-json":
                text = json.dumps(self._completion(body))
                return web.Response(text=text[: len(text) // 2], content_type="application/json")
            if step == "no-choices":
                return web.json_response({**self._completion(body), "choices": []})
            if body.get("stream"):
                return await self._stream(
                    request,
                    with_usage=step != "no-usage",
                    fail=step == "fail-mid-stream",
                    garbage=step == "garbage-mid-stream",
                )
            return web.json_response(self._completion(body))
        finally:
            self.in_flight -= 1

    @staticmethod
    def _completion(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-flaky",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "flaky"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        }

    async def _stream(
        self, request: web.Request, *, with_usage: bool, fail: bool = False, garbage: bool = False
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = ANSWER.split(" ")
        for index, word in enumerate(words):
            chunk = {
                "id": "chatcmpl-flaky",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": "flaky",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": (" " if index else "") + word},
                        "finish_reason": "stop" if index == len(words) - 1 else None,
                    }
                ],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if fail and index == 1:
                # What transformers serve sends when generation breaks part-way.
                await response.write(b'data: {"error": "CUDA out of memory"}\n\n')
                await response.write_eof()
                return response
            if garbage and index == 1:
                await response.write(b'data: {"choices": "not a list"}\n\n')
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
                return response
        if with_usage:
            usage_chunk = {
                "id": "chatcmpl-flaky",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": "flaky",
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
            }
            await response.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "flaky", "object": "model"}]})


@contextmanager
def flaky_server(script: list[Any]) -> Iterator[FlakyServer]:
    server = FlakyServer(script=list(script))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: dict[str, web.AppRunner] = {}

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", server.chat)
        app.router.add_get("/v1/models", server.models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runner_box["runner"] = runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="flaky-openai-server", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner_box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
