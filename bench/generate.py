"""Benchmark: RAFT generation throughput (rows/s) against an OpenAI-compatible server on
loopback that answers after a fixed delay.

Clients send the same kinds of requests (questions per chunk, then a chain-of-thought answer and
a judge verdict per question, with the same prompts):

* ``pipeline`` — RAFTweb's generation engine alone (raftweb.raft.pipeline: the openai backend,
  parsing, quote verification, context assembly, judging) at concurrency C, random distractors
  (the engine alone has no index to take hard negatives from);
* ``plain_asyncio`` — a bare ``openai.AsyncOpenAI`` client with an ``asyncio.Semaphore(C)``
  doing only the calls (no parsing or verification): the ceiling for this server;
* ``service`` — what users run: the whole Django job (``generation_job_run``) with the DEFAULT
  settings, hard negatives on (retrieved by hybrid search from the KB's real indexes), on a KB
  ingested through the real ingestion service, on a throwaway SQLite data dir;
* ``service_no_hard_negatives`` — the same job with ``hard_negative_share`` 0;
* ``startup`` — ``manage.py raft_generate <kb> --wait`` for one chunk in a fresh process:
  seconds to the server's first request (``first_model_call_s``) and in all;
* ``reference_<W>_threads`` — the public RAFT reference script's concurrency shape
  (ShishirPatil/gorilla raft/raft.py: a ThreadPoolExecutor of ``--workers`` threads, each taking a
  chunk and making its calls one after another with the synchronous client), for each W of
  ``--reference-workers``; the fastest is the baseline.

Prints one JSON line per case and one ``ratios`` line: ``hard_negatives_vs_none`` (service with
hard negatives / without; target >= 0.8) and ``pipeline_vs_reference_best`` (the default job,
hard negatives on, / the reference shape at its best worker count; target >= 1.5), beside the
older ratios. The server (raftweb/testing/teacher_server.py) runs in a subprocess so its work
does not share our GIL. A few minutes with the defaults:

    .venv/bin/python bench/generate.py [--chunks 64] [--concurrency 64] [--delay 0.2]
        [--reference-workers 2 8 16 32 42 64] [--tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORPUS = ROOT.parent / "shared" / "datasets" / "emanual_s10" / "corpus_s10.jsonl"


# ----------------------------------------------------------------------------- workload


def load_chunks(n: int) -> list[str]:
    from raftweb.testing.teacher_server import sentences

    chunks: list[str] = []
    if CORPUS.exists():
        for line in CORPUS.read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            for i in range(0, len(text), 1200):
                piece = text[i : i + 1200]
                if len(sentences(piece)) >= 1:
                    chunks.append(piece)
            if len(chunks) >= n:
                break
    while len(chunks) < n:  # no dataset: synthetic, distinct chunks
        i = len(chunks)
        chunks.append(
            f"Chunk {i} describes setting number {i}. It is enabled from menu {i * 7}. "
            f"Hold the key for {i % 9 + 1} seconds to confirm choice {i * 3}."
        )
    return chunks[:n]


def run_pipeline(base_url: str, chunks: list[str], concurrency: int, q: int) -> dict[str, float]:
    from raftweb.llm import ModelSpec, get_backend
    from raftweb.raft.pipeline import ChunkInput, ChunkStore, GenerationConfig, run_chunks

    spec = ModelSpec(
        backend="openai",
        model="bench",
        base_url=base_url,
        api_key="x",
        max_concurrency=concurrency,
        timeout_s=60,
    )
    backend = get_backend(spec)
    texts = dict(enumerate(chunks))
    store = ChunkStore(pool=list(texts), text_of=texts.__getitem__)
    config = GenerationConfig(
        questions_per_chunk=q,
        max_concurrency=concurrency,
        p=1.0,
        num_distractors=3,
        hard_negative_share=0.0,
    )
    inputs = [ChunkInput(i, t) for i, t in texts.items()]
    start = time.perf_counter()
    results = run_chunks(inputs, teacher=backend, judge=backend, config=config, store=store)
    elapsed = time.perf_counter() - start
    rows = sum(len(r.rows) for r in results)
    verified = sum(1 for r in results for row in r.rows if row.quote_status == "verified")
    errors = sum(1 for r in results if r.error)
    return {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "verified_rows": verified,
        "chunk_errors": errors,
    }


def setup_service(base_url: str, chunks: list[str], concurrency: int) -> Any:
    """A throwaway data dir and database, one KB whose documents are ``chunks`` (one each),
    ingested (parsed, chunked, embedded, indexed) by the real service; teacher and judge
    profiles pointed at the server."""
    import tempfile

    if "RAFTWEB_DATA_DIR" not in os.environ:
        import atexit
        import shutil

        data_dir = tempfile.mkdtemp(prefix="raftweb-bench-")
        atexit.register(shutil.rmtree, data_dir, True)
        os.environ["RAFTWEB_DATA_DIR"] = data_dir
    os.environ.pop("DATABASE_URL", None)
    os.environ["RAFTWEB_HUEY_IMMEDIATE"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "raftweb.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload, kb_create
    from raftweb.core.services import profile_update

    call_command("migrate", verbosity=0)
    kb = kb_create(name="bench", slug=f"bench-{time.time_ns()}")
    for i, text in enumerate(chunks):
        upload = document_upload(kb=kb, name=f"doc{i}.txt", chunks=[text.encode()], enqueue=False)
        document_ingest(document_id=upload.document.pk)
    for role in ("teacher", "judge"):
        profile_update(
            role=role,
            user=None,
            backend="openai",
            model="bench",
            base_url=base_url,
            api_key="x",
            max_concurrency=concurrency,
            timeout_s=60,
        )
    return kb


def run_service(kb: Any, concurrency: int, q: int, *, hard_negatives: bool) -> dict[str, float]:
    """One generation job with the default settings (``hard_negative_share`` 0 when
    ``hard_negatives`` is off), run to the end in this process as the worker runs it."""
    from corpus.generation.runner import generation_job_run
    from corpus.generation.services import generation_job_create

    config: dict[str, Any] = {"questions_per_chunk": q, "max_concurrency": concurrency}
    if not hard_negatives:
        config["hard_negative_share"] = 0.0
    job = generation_job_create(kb=kb, enqueue=False, config=config)
    start = time.perf_counter()
    job = generation_job_run(job_id=job.pk)
    elapsed = time.perf_counter() - start
    return {
        "chunks": job.chunks_total,
        "rows": job.rows,
        "seconds": elapsed,
        "rows_per_s": job.rows / elapsed,
        "chunks_failed": job.chunks_failed,
        "hard_negative_share": float(job.config.get("hard_negative_share", 0.0)),
    }


def _messages(chunk: str, q: int) -> list[dict[str, str]]:
    from raftweb.raft.prompts import questions_messages

    return [m.as_dict() for m in questions_messages(chunk, q)]


def _answer_msgs(question: str, chunk: str) -> list[dict[str, str]]:
    from raftweb.raft.prompts import cot_answer_messages

    return [m.as_dict() for m in cot_answer_messages(question, chunk)]


def _judge_msgs(question: str, answer: str, chunk: str) -> list[dict[str, str]]:
    from raftweb.raft.judge import judge_messages

    return [m.as_dict() for m in judge_messages(question=question, answer=answer, oracle=chunk)]


def run_plain(base_url: str, chunks: list[str], concurrency: int, q: int) -> dict[str, float]:
    import openai

    async def main() -> int:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60)
        sem = asyncio.Semaphore(concurrency)

        async def call(messages: list[dict[str, str]], max_tokens: int) -> str:
            async with sem:
                resp = await client.chat.completions.create(
                    model="bench", messages=messages, max_tokens=max_tokens
                )  # type: ignore[arg-type]
            return resp.choices[0].message.content or ""

        async def row(question: str, chunk: str) -> None:
            answer = await call(_answer_msgs(question, chunk), 1000)
            await call(_judge_msgs(question, answer, chunk), 300)

        async def one(chunk: str) -> int:
            questions = json.loads(await call(_messages(chunk, q), 400))[:q]
            await asyncio.gather(*(row(qq, chunk) for qq in questions))
            return len(questions)

        try:
            return sum(await asyncio.gather(*(one(c) for c in chunks)))
        finally:
            await client.close()

    start = time.perf_counter()
    rows = asyncio.run(main())
    elapsed = time.perf_counter() - start
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def run_reference(base_url: str, chunks: list[str], q: int, workers: int) -> dict[str, float]:
    """The reference script's shape: ``workers`` threads, one chunk each, its calls in turn."""
    import httpx
    import openai

    client = openai.OpenAI(
        base_url=base_url,
        api_key="x",
        max_retries=0,
        timeout=60,
        # A connection per thread (the reference's client pools up to 100 anyway).
        http_client=httpx.Client(limits=httpx.Limits(max_connections=workers + 4)),
    )

    def call(messages: list[dict[str, str]], max_tokens: int) -> str:
        resp = client.chat.completions.create(
            model="bench",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
        )
        return resp.choices[0].message.content or ""

    def one(chunk: str) -> int:
        questions = json.loads(call(_messages(chunk, q), 400))[:q]
        for question in questions:
            answer = call(_answer_msgs(question, chunk), 1000)
            call(_judge_msgs(question, answer, chunk), 300)
        return len(questions)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = sum(pool.map(one, chunks))
    elapsed = time.perf_counter() - start
    client.close()
    return {"workers": workers, "rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def run_startup(server: Any, kb: Any) -> dict[str, float]:
    """``manage.py raft_generate <kb> --wait`` (one chunk, default settings) in a fresh process:
    seconds from launch to the server's first request (imports, Django, the job's set-up; the
    issue measured 8 s, the reference script 3 s), and to the end."""
    import subprocess

    cmd = [sys.executable, "manage.py", "raft_generate", kb.slug, "--wait", "--limit-chunks", "1"]
    before = server.stats()["total"]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = None
    while proc.poll() is None:
        if first is None and server.stats()["total"] > before:
            first = time.perf_counter() - start
        time.sleep(0.01)
    if proc.returncode != 0:
        raise RuntimeError(f"raft_generate exited with {proc.returncode}")
    total = time.perf_counter() - start
    return {"first_model_call_s": first if first is not None else total, "total_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.2, help="server delay per request (s)")
    parser.add_argument(
        "--reference-workers",
        type=int,
        nargs="+",
        default=[2, 8, 16, 32, 42, 64],
        help="worker counts of the reference shape (its best is the baseline)",
    )
    parser.add_argument("--tiny", action="store_true", help="smoke run: 8 chunks, small counts")
    args = parser.parse_args()
    if args.tiny:
        args.chunks, args.concurrency, args.reference_workers = 8, 8, [2, 8]
    from raftweb.testing.teacher_server import TeacherServer

    server = TeacherServer.start(delay=args.delay)
    try:
        base_url = server.base_url
        chunks = load_chunks(args.chunks)
        common = {
            "chunks": len(chunks),
            "questions_per_chunk": args.questions,
            "concurrency": args.concurrency,
            "server_delay_s": args.delay,
        }
        kb = setup_service(base_url, chunks, args.concurrency)
        run_plain(base_url, chunks[:4], args.concurrency, args.questions)  # warm-up
        plain = run_plain(base_url, chunks, args.concurrency, args.questions)
        pipe = run_pipeline(base_url, chunks, args.concurrency, args.questions)
        service = run_service(kb, args.concurrency, args.questions, hard_negatives=True)
        no_hn = run_service(kb, args.concurrency, args.questions, hard_negatives=False)
        startup = run_startup(server, kb)
        refs: dict[int, dict[str, float]] = {}
        for workers in args.reference_workers:
            # Two rounds of every thread (at least 12 chunks): a rate, not a tail.
            part = chunks[: min(len(chunks), max(12, 2 * workers))]
            refs[workers] = run_reference(base_url, part, args.questions, workers)
        best = max(refs.values(), key=lambda r: r["rows_per_s"])
        ref2 = refs.get(2, best)
        cases = [
            ("plain_asyncio", plain),
            ("pipeline", pipe),
            ("service", service),
            ("service_no_hard_negatives", no_hn),
            ("startup", startup),
            *((f"reference_{w}_threads", r) for w, r in refs.items()),
        ]
        for name, res in cases:
            print(json.dumps({"case": name, **common, **{k: round(v, 3) for k, v in res.items()}}))
        print(
            json.dumps(
                {
                    "case": "ratios",
                    **common,
                    "hard_negatives_vs_none": round(service["rows_per_s"] / no_hn["rows_per_s"], 3),
                    "pipeline_vs_reference_best": round(
                        service["rows_per_s"] / best["rows_per_s"], 2
                    ),
                    "reference_best_workers": int(best["workers"]),
                    "engine_pipeline_vs_reference_best": round(
                        pipe["rows_per_s"] / best["rows_per_s"], 2
                    ),
                    "pipeline_vs_plain_asyncio": round(pipe["rows_per_s"] / plain["rows_per_s"], 3),
                    "pipeline_vs_reference_2_threads": round(
                        pipe["rows_per_s"] / ref2["rows_per_s"], 2
                    ),
                    "service_vs_plain_asyncio": round(
                        service["rows_per_s"] / plain["rows_per_s"], 3
                    ),
                    "service_vs_reference_2_threads": round(
                        service["rows_per_s"] / ref2["rows_per_s"], 2
                    ),
                    "targets": {
                        "hard_negatives_vs_none": ">= 0.8 at concurrency 64",
                        "pipeline_vs_reference_best": ">= 1.5",
                        "pipeline_vs_plain_asyncio": ">= 0.9",
                    },
                }
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
