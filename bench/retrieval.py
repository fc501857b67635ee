"""Benchmark: query latency on 100,000 chunks — dense, BM25 and hybrid vs. a raw Chroma query.

Cases (same queries, same index, one process, torch limited to 2 threads):

* ``raw_chroma`` — ``collection.query`` with a PRECOMPUTED query vector (the floor for dense);
* ``query_embedding`` — embedding the query alone (what dense/hybrid pay on top of Chroma);
* ``dense`` / ``bm25`` / ``hybrid`` — ``raftweb.retrieval.Retriever.search`` (what
  ``corpus.services.kb_search`` runs), embedding the query text each time.

The 100k chunks are built from the real E-Manual chunks (when ../shared/datasets exists): each
synthetic chunk mixes sentences of a real chunk with one from another, and its vector is the
real chunk's embedding plus noise (embedding 100k chunks on 2 CPU cores would take an hour; the
index structures and posting-list lengths are what latency depends on). Prints one JSON line
per case with p50/p95 and the ratio to raw Chroma, then a summary (target: hybrid p95 <= 100 ms).

    .venv/bin/python bench/retrieval.py [--chunks 100000] [--rounds 3] [--reuse] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "bench" / "out"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[idx]


def base_material(
    embedder: object, limit: int | None = None
) -> tuple[list[str], object, list[str]]:
    """Real chunk texts + their embeddings, and real questions (synthetic fallback)."""
    import numpy as np

    from raftweb.ingest import chunk_document, parse_bytes

    corpus = SHARED / "emanual_s10" / "corpus_s10.jsonl"
    questions_file = SHARED / "emanual_s10" / "questions_s10_50.jsonl"
    if corpus.is_file():
        texts: list[str] = []
        for line in corpus.read_text().splitlines()[:limit]:
            rec = json.loads(line)
            doc = parse_bytes(rec["text"].encode(), rec["doc_id"] + ".txt")
            texts += [
                c.index_text
                for c in chunk_document(
                    doc,
                    token_offsets=embedder.token_offsets,  # type: ignore[attr-defined]
                    max_tokens=embedder.max_input_tokens,  # type: ignore[attr-defined]
                )
            ]
        questions = [
            json.loads(line)["question"] for line in questions_file.read_text().splitlines()
        ][:limit]
    else:
        words = (
            "battery screen camera settings tap swipe notification network wireless charge display account "
            "privacy location update storage backup security sound vibration"
        ).split()
        rng = random.Random(0)
        texts = [" ".join(rng.choice(words) for _ in range(120)) + "." for _ in range(300)]
        questions = [" ".join(rng.choice(words) for _ in range(6)) + "?" for _ in range(50)]
    cache = OUT / f"retrieval_base_vectors_{len(texts)}.npy"
    if cache.is_file() and np.load(cache).shape[0] == len(texts):
        vectors = np.load(cache)
    else:
        vectors = embedder.encode(texts)  # type: ignore[attr-defined]
        OUT.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return texts, vectors, questions


def build(
    n: int, folder: Path, embedder: object, limit: int | None = None
) -> tuple[object, object, list[str]]:
    import numpy as np

    from raftweb.retrieval import BM25Index, IndexedChunk, collection_name, open_vector_store

    texts, base_vectors, questions = base_material(embedder, limit)
    store = open_vector_store("", folder / "chroma")
    coll = collection_name("bench", "base")
    bm25 = BM25Index(folder / "bm25.sqlite3")
    if store.count(coll) == n and bm25.count() == n:
        return store, bm25, questions
    store.drop(coll)
    bm25.clear()
    rng = np.random.default_rng(0)
    prng = random.Random(0)
    sentences = [re.split(r"(?<=[.!?\n])\s+", t) for t in texts]
    batch = 5000
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        ids, vecs, metas, records = [], [], [], []
        for i in range(start, min(n, start + batch)):
            b = i % len(texts)
            other = sentences[prng.randrange(len(texts))]
            parts = list(sentences[b])
            prng.shuffle(parts[1:]) if len(parts) > 2 else None
            text = " ".join(parts + [prng.choice(other)])
            noise = rng.standard_normal(base_vectors.shape[1]).astype("float32")
            vec = base_vectors[b] + 0.5 * noise / np.linalg.norm(noise)
            ids.append(str(i))
            vecs.append(vec / np.linalg.norm(vec))
            metas.append({"document_id": i // 5})
            records.append(
                IndexedChunk(
                    chunk_id=str(i),
                    document_id=i // 5,
                    document_name=f"doc{i // 5}.txt",
                    text=text,
                    start=0,
                    end=len(text),
                )
            )
        store.upsert(coll, ids, np.asarray(vecs, dtype="float32"), metas)
        bm25.add(records)
        print(
            json.dumps(
                {
                    "building": min(n, start + batch),
                    "of": n,
                    "s": round(time.perf_counter() - t0, 1),
                }
            ),
            file=sys.stderr,
            flush=True,
        )
    bm25.optimize()
    return store, bm25, questions


def timed(fn: Callable[[], object], rounds: int, queries: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        for i in range(queries):
            t = time.perf_counter()
            fn_i = fn(i)  # type: ignore[call-arg]
            del fn_i
            samples.append((time.perf_counter() - t) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--reuse", action="store_true", help="keep/reuse the built index in bench/out/"
    )
    parser.add_argument("--tiny", action="store_true", help="smoke run: 2,000 chunks, 1 round")
    args = parser.parse_args()
    if args.tiny:
        args.chunks, args.rounds = 2000, 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(2)
    from raftweb.retrieval import Retriever, collection_name, load_embedder

    embedder = load_embedder()
    folder = (
        OUT / f"retrieval_index_{args.chunks}"
        if args.reuse
        else Path(tempfile.mkdtemp(prefix="raftweb-bench-"))
    )
    t = time.perf_counter()
    store, bm25, questions = build(args.chunks, folder, embedder, 30 if args.tiny else None)
    build_s = time.perf_counter() - t
    coll_name = collection_name("bench", "base")
    retriever = Retriever(store=store, collection=coll_name, bm25=bm25, embedder=embedder)  # type: ignore[arg-type]
    raw = store._collection(coll_name)  # type: ignore[attr-defined]
    qvecs = embedder.encode(questions)
    nq = len(questions)

    cases: dict[str, Callable[[int], object]] = {
        "raw_chroma": lambda i: raw.query(
            query_embeddings=[qvecs[i]], n_results=args.k, include=["distances"]
        ),
        "query_embedding": lambda i: embedder.encode_query(questions[i]),
        "dense": lambda i: retriever.search(questions[i], mode="dense", k=args.k),
        "bm25": lambda i: retriever.search(questions[i], mode="bm25", k=args.k),
        "hybrid": lambda i: retriever.search(questions[i], mode="hybrid", k=args.k),
    }
    for fn in cases.values():  # warm caches (BM25 snapshot, HNSW pages, torch kernels)
        for i in range(min(5, nq)):
            fn(i)
    results = {name: timed(fn, args.rounds, nq) for name, fn in cases.items()}  # type: ignore[arg-type]
    raw_p50 = statistics.median(results["raw_chroma"])
    raw_p95 = percentile(results["raw_chroma"], 0.95)
    print(
        json.dumps(
            {
                "case": "index",
                "chunks": args.chunks,
                "bm25_segments": bm25.segment_count(),
                "build_s": round(build_s, 1),
                "synthetic_from_real_chunks": True,
            }
        )
    )
    for name, samples in results.items():
        p50, p95 = statistics.median(samples), percentile(samples, 0.95)
        print(
            json.dumps(
                {
                    "case": name,
                    "chunks": args.chunks,
                    "queries": len(samples),
                    "k": args.k,
                    "p50_ms": round(p50, 2),
                    "p95_ms": round(p95, 2),
                    "ratio_p50_vs_raw_chroma": round(p50 / raw_p50, 2),
                    "ratio_p95_vs_raw_chroma": round(p95 / raw_p95, 2),
                }
            ),
            flush=True,
        )
    hybrid_p95 = percentile(results["hybrid"], 0.95)
    print(
        json.dumps(
            {
                "case": "summary",
                "hybrid_p95_ms": round(hybrid_p95, 2),
                "target_ms": 100,
                "pass": hybrid_p95 <= 100,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )
    if not args.reuse:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
