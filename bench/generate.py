"""Benchmark: RAFT generation throughput (rows/s) against an OpenAI-compatible server on
loopback that answers after a fixed delay.

Three clients send the same requests (questions per chunk, then a chain-of-thought answer and a
judge verdict per question, with the same prompts):

* ``pipeline`` — RAFTweb's generation pipeline (raftweb.raft.pipeline, the openai backend,
  parsing, quote verification, context assembly, judging) at concurrency C;
* ``plain_asyncio`` — a bare ``openai.AsyncOpenAI`` client with an ``asyncio.Semaphore(C)``
  doing only the calls (no parsing or verification): the ceiling for this server;
* ``service`` — the whole Django job (``corpus.services_qa.generation_job_run``): the same
  pipeline plus context assembly from the database and one transaction per chunk (rows,
  model-call log, unit state, job counters), on a throwaway SQLite data dir;
* ``reference_2_threads`` — the public RAFT reference script's shape: two worker threads, each
  taking a chunk and making its calls one after another with the synchronous client.

Prints one JSON line per case and one with the ratios. The server
(raftweb/testing/teacher_server.py, shared with the worker-process tests) runs in a subprocess so
its work does not share our GIL.

    .venv/bin/python bench/generate.py [--chunks 64] [--concurrency 16] [--delay 0.2]
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


def run_service(base_url: str, chunks: list[str], concurrency: int, q: int) -> dict[str, float]:
    import hashlib
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

    from corpus.generation.runner import generation_job_run
    from corpus.generation.services import generation_job_create
    from corpus.models import Chunk, Document, KnowledgeBase
    from raftweb.core.services import profile_update

    call_command("migrate", verbosity=0)
    kb = KnowledgeBase.objects.create(slug=f"bench-{time.time_ns()}", name="bench")
    for i in range(0, len(chunks), 8):  # 8 chunks per document
        doc = Document.objects.create(
            kb=kb,
            name=f"doc{i}.txt",
            original_filename=f"doc{i}.txt",
            file_path="-",
            content_hash=hashlib.sha256(f"{kb.slug}{i}".encode()).hexdigest(),
            status=Document.Status.READY,
        )
        Chunk.objects.bulk_create(
            [
                Chunk(
                    document=doc,
                    ordinal=j,
                    text=t,
                    start=0,
                    end=len(t),
                    hash=hashlib.sha256(t.encode()).hexdigest(),
                )
                for j, t in enumerate(chunks[i : i + 8])
            ]
        )
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
    job = generation_job_create(
        kb=kb,
        enqueue=False,
        config={
            "questions_per_chunk": q,
            "max_concurrency": concurrency,
            "p": 1.0,
            "num_distractors": 3,
            "hard_negative_share": 0.0,
        },
    )
    start = time.perf_counter()
    job = generation_job_run(job_id=job.pk)
    elapsed = time.perf_counter() - start
    return {
        "rows": job.rows,
        "seconds": elapsed,
        "rows_per_s": job.rows / elapsed,
        "chunks_failed": job.chunks_failed,
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


def run_reference(base_url: str, chunks: list[str], q: int) -> dict[str, float]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60)

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
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = sum(pool.map(one, chunks))
    elapsed = time.perf_counter() - start
    client.close()
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument(
        "--reference-chunks",
        type=int,
        default=12,
        help="the reference shape is slow; its rate is measured on fewer chunks",
    )
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.2, help="server delay per request (s)")
    args = parser.parse_args()
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
        run_plain(base_url, chunks[:4], args.concurrency, args.questions)  # warm-up
        plain = run_plain(base_url, chunks, args.concurrency, args.questions)
        pipe = run_pipeline(base_url, chunks, args.concurrency, args.questions)
        service = run_service(base_url, chunks, args.concurrency, args.questions)
        ref = run_reference(base_url, chunks[: args.reference_chunks], args.questions)
        for name, res in (
            ("plain_asyncio", plain),
            ("pipeline", pipe),
            ("service", service),
            ("reference_2_threads", ref),
        ):
            print(json.dumps({"case": name, **common, **{k: round(v, 3) for k, v in res.items()}}))
        print(
            json.dumps(
                {
                    "case": "ratios",
                    **common,
                    "pipeline_vs_plain_asyncio": round(pipe["rows_per_s"] / plain["rows_per_s"], 3),
                    "pipeline_vs_reference_2_threads": round(
                        pipe["rows_per_s"] / ref["rows_per_s"], 2
                    ),
                    "service_vs_plain_asyncio": round(
                        service["rows_per_s"] / plain["rows_per_s"], 3
                    ),
                    "service_vs_reference_2_threads": round(
                        service["rows_per_s"] / ref["rows_per_s"], 2
                    ),
                    "targets": {
                        "pipeline_vs_plain_asyncio": ">= 0.9",
                        "pipeline_vs_reference_2_threads": ">= 5 at concurrency 16",
                    },
                }
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
