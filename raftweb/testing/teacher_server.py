"""A scripted OpenAI-compatible teacher and judge for RAFT generation, on loopback, in its own
process, that counts what it served.

It answers the three prompts of :mod:`raftweb.raft.prompts` / :mod:`raftweb.raft.judge`:

* the question-generation prompt with a JSON list of ``n`` distinct questions (different spans
  of the chunk, so no client drops one as a duplicate);
* the answer prompt (``Context: …``) with a chain-of-thought answer that quotes the first
  sentence of the context between ``##begin_quote##`` and ``##end_quote##`` and ends with
  ``<ANSWER>:``, so the quote verifies against the chunk;
* the judge prompt with a JSON score (4: above the default threshold, so nothing is rejected);
* anything else (a refusal prompt) with an ``<ANSWER>:`` saying the context lacks the answer.

Every reply waits ``delay`` seconds first (a slow model). ``GET /stats`` returns how many
chat-completion requests it received, per kind, how many it completed, and how many repeated an
earlier request exactly, so a test in another process can assert exact call counts.

Used by the worker-process tests (``tests/corpus/test_worker_process.py``) and by
``bench/generate.py``. It runs in a subprocess so its work never shares a GIL with the client::

    python -m raftweb.testing.teacher_server --delay 0.2      # prints its port, then serves
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

KINDS = ("questions", "answer", "judge", "other")
ORDINALS = ("one", "two", "three", "four", "five", "six")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]


def request_kind(messages: list[dict[str, Any]]) -> str:
    """Which of the RAFT prompts this is: questions, answer, judge or other (e.g. refusal)."""
    system = str(messages[0].get("content", "")) if messages else ""
    user = str(messages[-1].get("content", "")) if messages else ""
    if "question-answer pair generator" in system:
        return "questions"
    if "grader" in system:
        return "judge"
    if "Context: " in user:
        return "answer"
    return "other"


def reply(messages: list[dict[str, Any]]) -> str:
    kind = request_kind(messages)
    system = str(messages[0].get("content", "")) if messages else ""
    user = str(messages[-1].get("content", "")) if messages else ""
    if kind == "questions":
        n = int(m.group(1)) if (m := re.search(r"generate (\d+)", system)) else 3
        words = user.split() or ["nothing"]
        return json.dumps(
            [
                f"What does the manual mean by '{' '.join(words[i * 7 : i * 7 + 7] or words[:3])}' "
                f"in passage {ORDINALS[i % len(ORDINALS)]}?"
                for i in range(n)
            ]
        )
    if kind == "judge":
        return json.dumps({"score": 4, "reason": "Faithful to the document."})
    if kind == "answer":
        context = user.split("Context: ", 1)[1].split("\n\nAnswer this question", 1)[0]
        first = (sentences(context) or [context[:120]])[0]
        return (
            "The document states ##begin_quote##" + first + "##end_quote##, which answers it."
            "\n<ANSWER>: " + first[:80]
        )
    return "None of the documents covers it.\n<ANSWER>: The context does not contain the answer."


def serve(*, delay: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until killed; print the bound port on stdout once listening."""
    from aiohttp import web

    received: Counter[str] = Counter()
    seen: set[str] = set()
    totals = {"completed": 0, "duplicates": 0}

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        messages = body.get("messages", [])
        # Counted on receipt, before the delay: a request whose client gave up still counts.
        received[request_kind(messages)] += 1
        fingerprint = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        if fingerprint in seen:
            totals["duplicates"] += 1
        seen.add(fingerprint)
        await asyncio.sleep(delay)
        text = reply(messages)
        prompt = sum(len(str(m.get("content", ""))) for m in messages) // 4
        totals["completed"] += 1
        return web.json_response(
            {
                "id": "cmpl-teacher",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "teacher"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": prompt + len(text) // 4,
                },
            }
        )

    async def stats(request: web.Request) -> web.Response:
        counts = {kind: received[kind] for kind in KINDS}
        return web.json_response({**counts, "total": sum(counts.values()), **totals})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "teacher", "object": "model"}]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", completions)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(bound, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class TeacherServer:
    """Handle of a server subprocess started by :meth:`start`."""

    process: subprocess.Popen[str]
    port: int
    delay: float

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @classmethod
    def start(cls, *, delay: float = 0.0, timeout_s: float = 30.0) -> TeacherServer:
        root = Path(__file__).resolve().parents[2]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "raftweb.testing.teacher_server", "--delay", str(delay)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
            env=env,
        )
        line = process.stdout.readline() if process.stdout else ""  # the port, once listening
        if not line.strip().isdigit():
            process.kill()
            process.wait(timeout_s)
            raise RuntimeError(f"the teacher server did not start (said {line!r})")
        server = cls(process=process, port=int(line), delay=delay)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                server.stats()
                return server
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise
                time.sleep(0.05)

    def stats(self) -> dict[str, int]:
        """Requests received per kind (questions, answer, judge, other), total, completed,
        duplicates (requests identical to an earlier one)."""
        response = httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> TeacherServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible RAFT teacher/judge.")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args()
    serve(delay=args.delay, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
