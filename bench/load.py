"""Load benchmark: API search, review actions and chat under load, from a second process on
loopback, against the app served by daphne exactly as ``manage.py serve`` runs it.

Cases (one JSON line each; requests/s and p95 at a fixed concurrency; errors must be 0):

* ``search_serial`` — one client, hybrid ``POST /api/kbs/<kb>/search`` (k=5) one after another;
* ``search_load`` — ``--clients`` (200) concurrent hybrid searches, each client ``--rounds`` in
  turn; prints the contract line
  ``{"case": "search_load", "clients": 200, "concurrent_vs_serial": x, "errors": n, "p95_ms": x}``
  (throughput against the serial case of the same run; target >= 3) and a ``search_load_detail``
  line with the rates;
* ``search_load_2_asgi`` — the same load spread over two daphne processes (clients alternate):
  ``vs_one_process`` shows what a second ASGI process adds;
* ``review_load`` — reviewers approving distinct Q&A pairs (``PATCH /api/qa-pairs/<id>``);
* ``chat_load`` — ``POST /api/v1/chat/completions`` (retrieval + a scripted model server that
  streams its answer at ``--rate`` tokens/s in its own process);
* ``worker_scaling`` — generation jobs queued on Huey/Redis and run by one, then two
  ``run_huey`` processes (one worker thread each) against a teacher server with a 0.2 s delay:
  jobs/s and rows/s, ``two_vs_one``. Needs ``REDIS_URL`` (else a ``skipped`` line); several
  processes writing one database want PostgreSQL (``DATABASE_URL``, a throwaway database: it is
  migrated and filled).

Rate limits are switched off for the served app (RAFTWEB_RATE_SEARCH/CHAT=off): this measures
capacity, not the limiter. The KB holds the first ``--docs`` E-Manual sections (synthetic text
when ../shared/datasets is absent). A few minutes with the defaults; on a shared machine, compare
the ratios of one run, not absolute figures across runs:

    .venv/bin/python bench/load.py [--clients 200] [--rounds 2] [--serial 60] [--docs 60]
    REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/raftweb_load \\
        .venv/bin/python bench/load.py            # + the worker_scaling case
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from raftweb.testing.processes import served_app_env, stop_processes  # noqa: E402
from raftweb.testing.scripted_llm import free_port, wait_port  # noqa: E402

EMANUAL = ROOT.parent / "shared" / "datasets" / "emanual_s10"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


# ------------------------------------------------------------------------------- setup


def documents(n: int) -> list[tuple[str, str]]:
    if (EMANUAL / "corpus_s10.jsonl").is_file():
        lines = (EMANUAL / "corpus_s10.jsonl").read_text().splitlines()[:n]
        return [(f"{r['doc_id']}.txt", r["text"]) for r in map(json.loads, lines)]
    return [
        (f"doc{i}.txt", f"Section {i}. Setting {i} is enabled from menu {i * 7}. " * 20)
        for i in range(n)
    ]


def questions() -> list[str]:
    if (EMANUAL / "questions_s10_50.jsonl").is_file():
        lines = (EMANUAL / "questions_s10_50.jsonl").read_text().splitlines()
        return [json.loads(line)["question"] for line in lines]
    return [f"How do I enable setting {i}?" for i in range(50)]


def setup_app(n_docs: int, llm_url: str, teacher_url: str, pairs: int) -> dict[str, Any]:
    """Migrate, create an admin with an API token, ingest a KB, make Q&A pairs to review,
    point the student profile at the scripted model and teacher/judge at the teacher server."""
    import django

    django.setup()
    from django.core.management import call_command

    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload, kb_create
    from corpus.models import Chunk, QAPair
    from raftweb.core.services import profile_update, token_create, user_create

    call_command("migrate", verbosity=0)
    user, _ = user_create(username=f"load{time.time_ns()}", role="admin", password="pw-load-1")
    _, token = token_create(user=user, name="load")
    kb = kb_create(name="Load", slug=f"load-{time.time_ns()}")
    for name, text in documents(n_docs):
        upload = document_upload(kb=kb, name=name, chunks=[text.encode()], enqueue=False)
        document_ingest(document_id=upload.document.pk)
    chunks = list(Chunk.objects.filter(document__kb=kb).select_related("document")[:pairs])
    made = QAPair.objects.bulk_create(
        [
            QAPair(
                kb=kb,
                oracle_chunk=chunks[i % len(chunks)],
                document=chunks[i % len(chunks)].document,
                question=f"What does section {i} say?",
                cot_answer="##Reason: ... <ANSWER>: it says so",
                final_answer="it says so",
                oracle_text=chunks[i % len(chunks)].text,
            )
            for i in range(pairs)
        ]
    )
    profile_update(
        role="student", user=None, backend="openai", model="scripted", base_url=llm_url,
        max_concurrency=1024, timeout_s=120.0,
    )  # fmt: skip
    for role in ("teacher", "judge"):
        profile_update(
            role=role, user=None, backend="openai", model="teacher", base_url=teacher_url,
            api_key="x", max_concurrency=8, timeout_s=60,
        )  # fmt: skip
    return {"kb": kb, "token": token, "pairs": [(p.pk, p.version) for p in made]}


def start_daphne(env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(log_dir / f"daphne-{port}.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "raftweb.asgi:application"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    wait_port(port, timeout=120.0)
    return proc, port


# ------------------------------------------------------------------------------- load


async def load(
    requests: list[tuple[str, str, dict[str, Any] | None]],
    *,
    ports: list[int],
    token: str,
    concurrency: int,
) -> dict[str, Any]:
    """Send ``requests`` ((method, path, json)) with ``concurrency`` clients; client i talks to
    ``ports[i % len(ports)]``. Returns requests/s, p50/p95 latency (ms) and errors.

    The clients use aiohttp, not httpx: on the 2-core machine httpx's per-request Python made
    the load generator the busiest process (71% of a core against the server's 65% at 200
    clients), so the server was measured sharing its CPU with its own benchmark."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    queue: asyncio.Queue[tuple[str, str, dict[str, Any] | None]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    latencies: list[float] = []
    errors: list[str] = []

    async def client(i: int, http: aiohttp.ClientSession) -> None:
        base = f"http://127.0.0.1:{ports[i % len(ports)]}"
        while True:
            try:
                method, path, body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                async with http.request(method, base + path, json=body, headers=headers) as resp:
                    text = await resp.read()
                    if resp.status >= 400:
                        errors.append(f"{resp.status}: {text[:200].decode(errors='replace')}")
                        continue
            except Exception as exc:  # noqa: BLE001 - a failed request is a result
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency + 10)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "requests": len(requests),
        "concurrency": concurrency,
        "req_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1) if latencies else None,
        "errors": len(errors),
        "error_sample": errors[0] if errors else "",
        "wall_s": round(wall, 2),
    }


def search_requests(slug: str, n: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    qs = questions()
    return [
        ("POST", f"/api/kbs/{slug}/search", {"query": qs[i % len(qs)], "mode": "hybrid", "k": 5})
        for i in range(n)
    ]


def warm(ports: list[int], token: str, slug: str) -> None:
    for port in ports:  # the first search loads the embedder in each server process
        asyncio.run(load(search_requests(slug, 3), ports=[port], token=token, concurrency=1))


# ------------------------------------------------------------------------------- workers


def worker_scaling(env: dict[str, str], kb: Any, jobs: int, log_dir: Path) -> dict[str, Any]:
    """Generation jobs queued on Huey, run by one then two worker processes."""
    from corpus.generation.services import generation_job_create
    from corpus.models import GenerationJob

    rates: dict[int, dict[str, float]] = {}
    for n_workers in (1, 2):
        # One worker thread each: what a second process adds, not a second thread.
        worker_env = {**env, "RAFTWEB_WORKERS": "1"}
        procs = [
            subprocess.Popen(
                [sys.executable, "manage.py", "run_huey", "--quiet"],
                env=worker_env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=open(log_dir / f"worker-{n_workers}-{i}.log", "wb"),  # noqa: SIM115
            )  # fmt: skip
            for i in range(n_workers)
        ]
        try:
            time.sleep(5)  # workers up (imports) before the clock starts
            config = {"limit_chunks": 4, "questions_per_chunk": 2, "max_concurrency": 4,
                      "hard_negative_share": 0.0, "judge_enabled": False}  # fmt: skip
            start = time.perf_counter()
            ids = [generation_job_create(kb=kb, config=config).pk for _ in range(jobs)]
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done = GenerationJob.objects.filter(
                    pk__in=ids, status__in=("finished", "failed", "cancelled")
                )
                if done.count() == len(ids):
                    break
                time.sleep(0.2)
            wall = time.perf_counter() - start
            finished = GenerationJob.objects.filter(pk__in=ids, status="finished")
            rows = sum(finished.values_list("rows", flat=True))
            rates[n_workers] = {
                "jobs_finished": finished.count(),
                "jobs_per_s": round(finished.count() / wall, 3),
                "rows_per_s": round(rows / wall, 2),
            }
        finally:
            stop_processes(procs, timeout=15)
    return {
        "case": "worker_scaling",
        "jobs": jobs,
        "one_worker": rates[1],
        "two_workers": rates[2],
        "two_vs_one": round(rates[2]["rows_per_s"] / max(rates[1]["rows_per_s"], 1e-9), 2),
    }


# ------------------------------------------------------------------------------- main


def serve_forever(kind: str, port: int) -> None:
    if kind == "llm":
        from raftweb.testing.scripted_llm import ScriptedLLM

        server = ScriptedLLM(token_delay_s=0.01, port=port).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)
    server.stop()  # pragma: no cover


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200, help="concurrent search clients")
    parser.add_argument("--rounds", type=int, default=2, help="searches per client")
    parser.add_argument("--serial", type=int, default=60, help="searches in the serial case")
    parser.add_argument("--review-clients", type=int, default=20)
    parser.add_argument("--reviews", type=int, default=200)
    parser.add_argument("--chat-clients", type=int, default=20)
    parser.add_argument("--chats", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=6, help="generation jobs (worker case)")
    parser.add_argument("--docs", type=int, default=60, help="E-Manual sections in the KB")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["search", "review", "chat", "workers"],
        choices=["search", "review", "chat", "workers"],
    )
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_forever(args.serve[0], int(args.serve[1]))
        return

    data_dir = tempfile.mkdtemp(prefix="raftweb-bench-load-")
    # A queue of its own on a shared Redis: no other worker takes these jobs.
    env = served_app_env(data_dir, RAFTWEB_HUEY_NAME=f"raftweb-load-{os.getpid()}")
    os.environ.update(env)
    procs: list[subprocess.Popen[bytes]] = []
    log_dir = Path(data_dir)
    try:
        from raftweb.testing.teacher_server import TeacherServer

        teacher = TeacherServer.start(delay=0.2)
        llm_port = free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--serve", "llm", str(llm_port)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        )
        wait_port(llm_port, timeout=120.0)
        ctx = setup_app(
            args.docs, f"http://127.0.0.1:{llm_port}/v1", teacher.base_url, args.reviews
        )
        slug, token = ctx["kb"].slug, ctx["token"]
        first, port1 = start_daphne(env, log_dir)
        procs.append(first)
        warm([port1], token, slug)

        if "search" in args.cases:
            search_cases(args, env, log_dir, procs, port1, token, slug)
        if "review" in args.cases:
            review_case(args, ctx, port1, token)
        if "chat" in args.cases:
            chat_case(args, port1, token, slug)
        if "workers" not in args.cases:
            pass
        elif os.environ.get("REDIS_URL"):
            print(json.dumps(worker_scaling(env, ctx["kb"], args.jobs, log_dir)), flush=True)
        else:
            print(json.dumps({"case": "worker_scaling", "skipped": "needs REDIS_URL"}))
        teacher.stop()
    finally:
        stop_processes(procs)


def search_cases(
    args: argparse.Namespace,
    env: dict[str, str],
    log_dir: Path,
    procs: list[subprocess.Popen[bytes]],
    port1: int,
    token: str,
    slug: str,
) -> None:
    serial = asyncio.run(
        load(search_requests(slug, args.serial), ports=[port1], token=token, concurrency=1)
    )
    print(json.dumps({"case": "search_serial", **serial}), flush=True)
    total = args.clients * args.rounds
    concurrent = asyncio.run(
        load(search_requests(slug, total), ports=[port1], token=token, concurrency=args.clients)
    )
    ratio = round(concurrent["req_per_s"] / max(serial["req_per_s"], 1e-9), 2)
    print(
        json.dumps(
            {
                "case": "search_load",
                "clients": args.clients,
                "concurrent_vs_serial": ratio,
                "errors": concurrent["errors"],
                "p95_ms": concurrent["p95_ms"],
            }
        ),
        flush=True,
    )
    print(json.dumps({"case": "search_load_detail", **concurrent, "target_ratio": ">= 3"}))

    second, port2 = start_daphne(env, log_dir)
    procs.append(second)
    warm([port2], token, slug)
    two = asyncio.run(
        load(
            search_requests(slug, total),
            ports=[port1, port2],
            token=token,
            concurrency=args.clients,
        )
    )
    two_vs_one = round(two["req_per_s"] / max(concurrent["req_per_s"], 1e-9), 2)
    print(json.dumps({"case": "search_load_2_asgi", **two, "vs_one_process": two_vs_one}))


def review_case(args: argparse.Namespace, ctx: dict[str, Any], port1: int, token: str) -> None:
    reviews = [
        ("PATCH", f"/api/qa-pairs/{pk}", {"version": version, "action": "approve"})
        for pk, version in ctx["pairs"]
    ]
    review = asyncio.run(load(reviews, ports=[port1], token=token, concurrency=args.review_clients))
    print(json.dumps({"case": "review_load", **review}), flush=True)


def chat_case(args: argparse.Namespace, port1: int, token: str, slug: str) -> None:
    qs = questions()
    chats = [
        (
            "POST",
            "/api/v1/chat/completions",
            {"model": slug, "messages": [{"role": "user", "content": qs[i % len(qs)]}]},
        )
        for i in range(args.chats)
    ]
    chat = asyncio.run(load(chats, ports=[port1], token=token, concurrency=args.chat_clients))
    print(json.dumps({"case": "chat_load", **chat}), flush=True)


if __name__ == "__main__":
    main()
