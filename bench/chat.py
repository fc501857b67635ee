"""Chat streaming benchmark: WebSocket clients through the app vs the same clients streaming
straight from the model server.

    .venv/bin/python bench/chat.py [--clients 1 10 50] [--stress 200] [--rate 50] [--tokens 60]

A scripted OpenAI-compatible server (raftweb/testing/scripted_llm.py) runs in its own process and
streams a fixed answer at a fixed token rate. The app runs under daphne in another process,
with a throwaway SQLite database and a small indexed knowledge base, its "student" profile
pointed at that server. For each N, N clients ask at once:

- through the app: WebSocket, one new conversation each, timing the token fragments;
- directly: the same prompt, streamed from the model server with httpx.

Prints one JSON line per case: time-to-first-token p50 (the app's minus its own retrieval
time, vs direct: all direct clients at once, and "staggered", sending on the schedule at which
the app's searches finished), per-stream token rates and their ratio, and errors; a stress case with
``--stress`` concurrent conversations (dropped or errored streams must be 0); and the daphne
process's memory per open idle connection. Targets: added TTFT p50 ≤ 50 ms, throughput
ratio ≥ 0.9 at 50 clients, 0 failures at 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from raftweb.testing.processes import served_app_env, stop_processes  # noqa: E402
from raftweb.testing.scripted_llm import free_port, wait_port  # noqa: E402

DOC = (
    "To reset the television, hold the power button for ten seconds. The screen turns off and "
    "on again, and the factory settings are restored.\n\nThe warranty covers two years of normal "
    "use. Water damage is not covered."
)
QUESTION = "How do I reset the television?"
TOKEN_RE = re.compile(r'^<span id="answer-(\d+)-stream" hx-swap-oob="beforeend">')
FINAL_RE = re.compile(r'id="msg-(\d+)"[^>]*data-status="(ok|error|cancelled)"')


def scripted_text(n_tokens: int) -> str:
    quote = "To reset the television, hold the power button for ten seconds."
    filler = " ".join(f"step{i}" for i in range(max(0, n_tokens - 30)))
    reason = f"##Reason: The manual says ##begin_quote## {quote} ##end_quote## {filler}"
    return f"{reason} <ANSWER>: {quote}"


def serve_llm(port: int, delay: float, n_tokens: int) -> None:
    from raftweb.testing.scripted_llm import ScriptedLLM

    server = ScriptedLLM(
        token_delay_s=delay, port=port, answer_override=scripted_text(n_tokens)
    ).start()
    print("ready", server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


# ------------------------------------------------------------------------------- setup


def setup_app(llm_url: str) -> dict[str, Any]:
    """Migrate a throwaway database, index a KB, point the student profile at the server."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload, kb_create
    from raftweb.core.services import profile_update, user_create

    call_command("migrate", verbosity=0)
    user, _ = user_create(username="bench", role="support", password="pw-bench")
    kb = kb_create(name="Bench", slug="bench")
    doc = document_upload(kb=kb, name="manual.txt", chunks=[DOC.encode()], enqueue=False)
    document_ingest(document_id=doc.document.pk)
    profile_update(
        role="student", user=None, backend="openai", model="scripted", base_url=llm_url,
        max_concurrency=1024, timeout_s=120.0,
    )  # fmt: skip
    client = Client()
    client.force_login(user)
    return {"user": user, "kb": kb, "cookie": client.cookies["sessionid"].value}


def new_conversations(ctx: dict[str, Any], n: int) -> list[int]:
    from chat.services import conversation_create

    return [conversation_create(owner=ctx["user"], kb=ctx["kb"]).pk for _ in range(n)]


def direct_prompt(ctx: dict[str, Any]) -> list[dict[str, str]]:
    from corpus.knowledge.search import kb_search
    from raftweb.raft.prompts import build_messages

    hits = kb_search(kb=ctx["kb"], query=QUESTION, k=5)
    return [m.as_dict() for m in build_messages(QUESTION, [h.text for h in hits])]


# ------------------------------------------------------------------------------- clients


@dataclass
class Stream:
    ttft: float | None = None
    token_times: list[float] = field(default_factory=list)
    ok: bool = False
    error: str = ""
    answer_id: int | None = None

    @property
    def rate(self) -> float | None:
        t = self.token_times
        if len(t) < 2 or t[-1] <= t[0]:
            return None
        return (len(t) - 1) / (t[-1] - t[0])


async def ws_client(port: int, conv_id: int, cookie: str, start: asyncio.Event) -> Stream:
    import websockets

    out = Stream()
    try:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/chat/{conv_id}/",
            origin=f"http://127.0.0.1:{port}",
            additional_headers={"Cookie": f"sessionid={cookie}"},
            max_size=None,
            open_timeout=60,
        ) as ws:
            await ws.recv()  # the restored (empty) conversation
            await start.wait()
            t0 = time.perf_counter()
            await ws.send(json.dumps({"action": "ask", "question": QUESTION}))
            while True:
                frame = await asyncio.wait_for(ws.recv(), timeout=120)
                now = time.perf_counter()
                if TOKEN_RE.match(frame):
                    if out.ttft is None:
                        out.ttft = now - t0
                        out.answer_id = int(TOKEN_RE.match(frame).group(1))  # type: ignore[union-attr]
                    out.token_times.append(now)
                    continue
                final = FINAL_RE.search(frame)
                if final:
                    out.ok = final.group(2) == "ok"
                    out.error = "" if out.ok else f"status {final.group(2)}"
                    out.answer_id = int(final.group(1))
                    return out
    except Exception as exc:  # noqa: BLE001 - a dropped stream is a result, not a crash
        out.error = f"{type(exc).__name__}: {exc}"
    return out


async def direct_client(
    client: Any, url: str, messages: list[dict[str, str]], start: asyncio.Event, delay: float = 0.0
) -> Stream:
    out = Stream()
    await start.wait()
    if delay:
        await asyncio.sleep(delay)
    t0 = time.perf_counter()
    body = {
        "model": "scripted",
        "messages": messages,
        "stream": True,
        "max_tokens": 800,
        "temperature": 0,
    }
    try:
        async with client.stream(
            "POST", f"{url}/chat/completions", json=body, timeout=120
        ) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                choices = data.get("choices") or []
                if choices and choices[0].get("delta", {}).get("content"):
                    now = time.perf_counter()
                    if out.ttft is None:
                        out.ttft = now - t0
                    out.token_times.append(now)
        out.ok = True
    except Exception as exc:  # noqa: BLE001
        out.error = f"{type(exc).__name__}: {exc}"
    return out


async def run_app_clients(
    port: int, conv_ids: list[int], cookie: str
) -> tuple[list[Stream], float]:
    start = asyncio.Event()
    tasks = [asyncio.create_task(ws_client(port, c, cookie, start)) for c in conv_ids]
    await asyncio.sleep(0.5 + 0.01 * len(conv_ids))  # all connected and restored
    t0 = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - t0


async def run_direct_clients(
    url: str, n: int, messages: list[dict[str, str]], delays: list[float] | None = None
) -> tuple[list[Stream], float]:
    """``delays``: when each client sends (default: all at once)."""
    import httpx

    delays = delays or [0.0] * n
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(limits=limits) as client:
        start = asyncio.Event()
        tasks = [
            asyncio.create_task(direct_client(client, url, messages, start, d)) for d in delays
        ]
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        start.set()
        results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - t0


def retrieval_times(answer_ids: list[int]) -> dict[int, float]:
    from chat.models import Message

    rows = Message.objects.filter(pk__in=answer_ids).values_list("pk", "retrieval_s")
    return {pk: r or 0.0 for pk, r in rows}


def p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


def summarise(
    case: str,
    n: int,
    app: list[Stream],
    direct: list[Stream] | None,
    retrieval: dict[int, float],
    staggered: list[Stream] | None = None,
) -> dict[str, Any]:
    app_ok = [s for s in app if s.ok and s.ttft is not None]
    app_ttft = [s.ttft for s in app_ok]  # type: ignore[misc]
    app_ttft_net = [s.ttft - retrieval.get(s.answer_id or 0, 0.0) for s in app_ok]  # type: ignore[operator]
    app_rates = [r for s in app_ok if (r := s.rate) is not None]
    line: dict[str, Any] = {
        "bench": "chat",
        "case": case,
        "clients": n,
        "app_ok": len(app_ok),
        "app_errors": len(app) - len(app_ok),
        "app_error_sample": next((s.error for s in app if not s.ok), ""),
        "app_ttft_p50_ms": ms(p50(app_ttft)),
        "app_retrieval_p50_ms": ms(p50(list(retrieval.values()))),
        "app_ttft_minus_retrieval_p50_ms": ms(p50(app_ttft_net)),
        "app_tokens_per_s_per_stream_p50": round(p50(app_rates) or 0, 2),
    }
    if direct is not None:
        d_ok = [s for s in direct if s.ok and s.ttft is not None]
        d_rates = [r for s in d_ok if (r := s.rate) is not None]
        d_ttft = p50([s.ttft for s in d_ok])  # type: ignore[misc]
        line.update(
            direct_ok=len(d_ok),
            direct_ttft_p50_ms=ms(d_ttft),
            direct_tokens_per_s_per_stream_p50=round(p50(d_rates) or 0, 2),
            added_ttft_p50_ms=ms((p50(app_ttft_net) or 0) - (d_ttft or 0))
            if app_ttft_net
            else None,
            throughput_ratio=round((p50(app_rates) or 0) / (p50(d_rates) or 1), 3),
        )
    if staggered is not None:
        s_ttft = p50([s.ttft for s in staggered if s.ok and s.ttft is not None])  # type: ignore[misc]
        line.update(
            direct_staggered_ttft_p50_ms=ms(s_ttft),
            added_ttft_vs_staggered_p50_ms=ms((p50(app_ttft_net) or 0) - (s_ttft or 0))
            if app_ttft_net
            else None,
        )
    return line


async def idle_connections(port: int, conv_ids: list[int], cookie: str) -> list[Any]:
    import websockets

    async def one(conv: int) -> Any:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/chat/{conv}/", origin=f"http://127.0.0.1:{port}",
            additional_headers={"Cookie": f"sessionid={cookie}"}, open_timeout=60,
        )  # fmt: skip
        await ws.recv()
        return ws

    return list(await asyncio.gather(*(one(c) for c in conv_ids)))


# ------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument(
        "--stress", type=int, default=200, help="concurrent conversations (0: skip)"
    )
    parser.add_argument(
        "--idle", type=int, default=200, help="idle connections for the memory figure"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per stream")
    parser.add_argument("--tokens", type=int, default=60, help="answer length in tokens")
    parser.add_argument("--server-log", default="", help="where daphne's output goes")
    parser.add_argument("--serve-llm", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_llm:
        serve_llm(args.serve_llm, 1.0 / args.rate, args.tokens)
        return

    data_dir = tempfile.mkdtemp(prefix="raftweb-bench-chat-")
    env = served_app_env(data_dir)
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    os.environ.update({k: v for k, v in env.items() if k != "DATABASE_URL"})

    llm_port, app_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        llm_cmd = [sys.executable, __file__, "--serve-llm", str(llm_port)]
        llm_cmd += ["--rate", str(args.rate), "--tokens", str(args.tokens)]
        procs.append(subprocess.Popen(llm_cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL))
        wait_port(llm_port)
        llm_url = f"http://127.0.0.1:{llm_port}/v1"
        ctx = setup_app(llm_url)
        daphne_cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(app_port)]
        log_path = args.server_log or str(Path(data_dir) / "daphne.log")
        daphne_log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        daphne = subprocess.Popen(
            [*daphne_cmd, "raftweb.asgi:application"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=daphne_log,
        )
        procs.append(daphne)
        wait_port(app_port)
        messages = direct_prompt(ctx)

        # Warm-up: the first search loads the embedder in the server process.
        asyncio.run(run_app_clients(app_port, new_conversations(ctx, 1), ctx["cookie"]))

        # Memory first, before the load cases grow (and keep) the server's heap.
        if args.idle:
            import psutil

            proc = psutil.Process(daphne.pid)
            conv_ids = new_conversations(ctx, args.idle)

            async def measure() -> dict[str, Any]:
                before = proc.memory_info().rss
                sockets = await idle_connections(app_port, conv_ids, ctx["cookie"])
                await asyncio.sleep(1.0)
                after = proc.memory_info().rss
                for ws in sockets:
                    await ws.close()
                return {
                    "bench": "chat",
                    "case": "memory_per_connection",
                    "connections": len(sockets),
                    "server_rss_before_mb": round(before / 2**20, 1),
                    "server_rss_after_mb": round(after / 2**20, 1),
                    "kib_per_connection": round((after - before) / len(sockets) / 1024, 1),
                }

            print(json.dumps(asyncio.run(measure())), flush=True)
        for n in args.clients:
            app, _ = asyncio.run(
                run_app_clients(app_port, new_conversations(ctx, n), ctx["cookie"])
            )
            direct, _ = asyncio.run(run_direct_clients(llm_url, n, messages))
            retrieval = retrieval_times([s.answer_id for s in app if s.answer_id])
            # The app asks the model only once each search is done, so its requests arrive
            # spread out, while earlier answers already stream. Direct clients sending on the
            # same schedule isolate what the app adds beyond retrieval.
            delays = sorted(retrieval.values())
            staggered, _ = asyncio.run(run_direct_clients(llm_url, len(delays), messages, delays))
            line = summarise("app_vs_direct", n, app, direct, retrieval, staggered)
            print(json.dumps(line), flush=True)

        if args.stress:
            app, wall = asyncio.run(
                run_app_clients(app_port, new_conversations(ctx, args.stress), ctx["cookie"])
            )
            retrieval = retrieval_times([s.answer_id for s in app if s.answer_id])
            line = summarise("stress", args.stress, app, None, retrieval)
            line.update(wall_s=round(wall, 2), dropped_or_errored=line["app_errors"])
            print(json.dumps(line), flush=True)

    finally:
        stop_processes(procs)


if __name__ == "__main__":
    main()
