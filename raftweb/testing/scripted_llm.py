"""A real OpenAI-compatible HTTP server on loopback that streams scripted RAFT answers.

Used by the chat tests (deterministic streaming over real HTTP, through the real ``openai``
backend) and by ``bench/chat.py`` (tokens at a fixed rate). The answer quotes the first
sentence of the first ``<DOCUMENT>`` in the prompt, so its quote verifies against the chunk
the app retrieved; a prompt with a payload can be made to answer with that payload.

Runs in its own thread with its own event loop, so sync tests, async tests and a live
Django server can all talk to it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DOC_RE = re.compile(r"<DOCUMENT>(.*?)</DOCUMENT>", re.DOTALL)
SENTENCE_RE = re.compile(r"(.+?[.!?])(?:\s|$)", re.DOTALL)


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = SENTENCE_RE.match(text)
    return (match.group(1) if match else text[:120]).strip()


def scripted_answer(messages: list[dict[str, Any]]) -> str:
    """A RAFT-format answer quoting the first document of the prompt."""
    prompt = "\n".join(str(m.get("content", "")) for m in messages)
    if "Stand-alone question:" in prompt:
        return scripted_rewrite(prompt)
    docs = DOC_RE.findall(prompt)
    if "REFUSE" in prompt or not docs:
        return (
            "##Reason: None of the documents mention this. "
            "<ANSWER>: I don't know, the context does not contain the answer."
        )
    quote = first_sentence(docs[0])
    return (
        f"##Reason: The first document says ##begin_quote## {quote} ##end_quote## "
        f"which answers the question directly. <ANSWER>: {quote}"
    )


def scripted_rewrite(prompt: str) -> str:
    """Rewrite = latest message + the previous user question (deterministic, checkable)."""
    latest = re.search(r"Latest message: (.*)", prompt)
    users = re.findall(r"^User: (.*)$", prompt, re.M)
    previous = users[-1] if users else ""
    return f"{(latest.group(1) if latest else '').strip()} (follow-up to: {previous})"


def split_tokens(text: str) -> list[str]:
    """Word pieces that keep their leading space, like a BPE tokenizer's stream."""
    return re.findall(r"\s*\S+", text)


@dataclass
class ScriptedLLM:
    """Handle of a running server; settings may be changed while it runs."""

    model: str = "scripted"
    token_delay_s: float = 0.005
    fail_status: int | None = None
    answer_override: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    active_streams: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # --- HTTP handlers -------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.fail_status:
            return web.json_response(
                {"error": {"message": "scripted failure"}}, status=self.fail_status
            )
        messages = body.get("messages", [])
        text = (
            self.answer_override if self.answer_override is not None else scripted_answer(messages)
        )
        pieces = split_tokens(text)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        created = int(time.time())
        if not body.get("stream"):
            await asyncio.sleep(self.token_delay_s * len(pieces))
            return web.json_response(
                {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion",
                    "created": created,
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        self.active_streams += 1
        try:
            for i, piece in enumerate(pieces):
                await asyncio.sleep(self.token_delay_s)
                delta: dict[str, Any] = {"content": piece}
                if i == 0:
                    delta["role"] = "assistant"
                await resp.write(_sse(_chunk(created, self.model, delta, None)))
            final = _chunk(created, self.model, {}, "stop")
            await resp.write(_sse(final))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(
                    _sse({**_chunk(created, self.model, {}, None), "choices": [], "usage": usage})
                )
            await resp.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            pass  # the client stopped reading (stop button, cancelled stream): fine
        finally:
            self.active_streams -= 1
        return resp

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> ScriptedLLM:
        ready = threading.Event()
        sock = socket.socket()
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]

        def _run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_get("/v1/models", self._models)
            app.router.add_post("/v1/chat/completions", self._chat)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.SockSite(self._runner, sock, shutdown_timeout=0.1).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=_run, name="scripted-llm", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)


def _chunk(created: int, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def free_port() -> int:
    """A loopback port nothing listens on (for "model server down" cases)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0) -> None:
    """Wait until something listens on loopback ``port`` (a server started in a subprocess)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")
