"""Benchmark: end-to-end ingestion vs. the physical floor (plain SentenceTransformer.encode).

Two cases in one process, on the same chunk texts and the same loaded model:

* ``project`` — ``python manage.py ingest`` in-process on a folder of a few hundred documents:
  streaming upload (hash, size limit, content-addressed store), sniffing parser, token-window
  chunking with the embedding tokenizer, Chunk rows, batched embedding, Chroma upsert, BM25
  segments, statuses — everything;
* ``baseline_encode`` — ``SentenceTransformer.encode(texts)`` on exactly the chunk texts the
  project embedded — the plain call, library defaults (batch size 32) — right before and right
  after each project run (and once at the project's own batch size, 16, which isolates overhead).

The ratio is the median over rounds of mean(encode before, encode after) / project — symmetric
in time, so load from anything else on the machine hits both sides alike.

Also ``parse_chunk_only`` (the non-embedding engine work alone) and the peak RSS. Prints one
JSON line per case, then one with the ratio (target >= 0.85).

    .venv/bin/python bench/ingest.py [--docs 451] [--copies 1] [--tiny]

The corpus is the public E-Manual (one file per section) plus the RAFT sample PDF/HTML/JSON
when ../shared/datasets exists, else synthetic text files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_corpus(folder: Path, docs: int, copies: int, samples: bool = True) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    corpus = SHARED / "emanual_s10" / "corpus_s10.jsonl"
    if corpus.is_file():
        records = [json.loads(line) for line in corpus.read_text().splitlines()][:docs]
        for copy in range(copies):
            for rec in records:
                suffix = f"\n\n(copy {copy})" if copy else ""
                (folder / f"{rec['doc_id']}-{copy}.txt").write_text(rec["text"] + suffix)
                n += 1
        for name in ("UC_Berkeley_short.pdf", "blog.txt", "apizoo.json") if samples else ():
            if (SHARED / "raft_samples" / name).is_file():
                shutil.copy(SHARED / "raft_samples" / name, folder / f"sample-{name}")
                n += 1
        return n
    words = (
        "battery screen camera settings tap swipe notification network wireless charge display "
        "account privacy location update storage backup security sound vibration"
    ).split()
    for i in range(docs * copies):
        paras = [
            " ".join(words[(i * 7 + j * 3 + k) % len(words)] for k in range(40)) + "."
            for j in range(6)
        ]
        (folder / f"doc{i}.txt").write_text(f"Section {i}\n\n" + "\n\n".join(paras))
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docs", type=int, default=451, help="documents per copy (E-Manual has 451)"
    )
    parser.add_argument(
        "--copies", type=int, default=1, help="repeat the corpus (distinct bytes) to scale it"
    )
    parser.add_argument("--tiny", action="store_true", help="smoke run: 6 documents, no samples")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved project/baseline rounds")
    parser.add_argument("--keep", action="store_true", help="keep the temp data dir")
    args = parser.parse_args()
    if args.tiny:
        args.docs, args.copies, args.rounds = 6, 1, 1

    data_dir = Path(tempfile.mkdtemp(prefix="raftweb-bench-ingest-"))
    os.environ["RAFTWEB_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "raftweb.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CHROMA_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from corpus.knowledge.indexes import kb_embedder
    from corpus.knowledge.ingestion import EMBED_BATCH
    from corpus.knowledge.services import kb_create
    from corpus.models import Chunk, KnowledgeBase
    from raftweb.ingest import chunk_document, parse_file

    embedder = kb_embedder(kb_create(name="warm", slug="warm"))
    kb = KnowledgeBase.objects.get(slug="warm")
    embedder.encode(["warm up the model", "and its kernels"] * 16)  # neither case pays the load
    rss_after_model = peak_rss_mb()

    folder = data_dir / "docs"
    n_files = write_corpus(folder, args.docs, args.copies, samples=not args.tiny)

    # Non-embedding engine work alone: parse + chunk every file.
    t = time.perf_counter()
    n_pieces = 0
    engine_texts: list[str] = []
    for path in sorted(folder.iterdir()):
        try:
            pieces = chunk_document(
                parse_file(path),
                size=kb.chunk_size,
                overlap=kb.chunk_overlap,
                token_offsets=embedder.token_offsets,
                max_tokens=embedder.max_input_tokens,  # as ingestion chunks (capped)
            )
        except Exception:
            continue
        n_pieces += len(pieces)
        engine_texts += [p.index_text for p in pieces]
    parse_chunk_s = time.perf_counter() - t

    # Interleaved rounds (project, then the baseline on the same texts) so that load from
    # anything else on the machine hits both sides alike; each round ingests into a fresh KB.
    project_runs: list[float] = []
    baseline_runs: list[float] = []
    project_cpu: list[float] = []
    baseline_cpu: list[float] = []
    inside_encode: list[float] = []
    real_encode = embedder.encode

    def timed_encode(texts: list[str], **kwargs: object) -> object:
        t0 = time.perf_counter()
        try:
            return real_encode(texts, **kwargs)  # type: ignore[arg-type]
        finally:
            inside_encode[-1] += time.perf_counter() - t0

    embedder.encode = timed_encode  # type: ignore[method-assign]
    result: dict[str, object] = {}
    texts: list[str] = engine_texts  # the same texts the project will embed (checked below)
    per_round: list[float] = []

    def baseline(batch_size: int) -> float:
        t, c = time.perf_counter(), time.process_time()
        embedder.model.encode(texts, batch_size=batch_size, show_progress_bar=False)
        baseline_runs.append(time.perf_counter() - t)
        baseline_cpu.append(time.process_time() - c)
        return baseline_runs[-1]

    for r in range(args.rounds):
        slug = f"bench-{r}"
        kb_create(name=slug, slug=slug)
        before = baseline(32)
        out = io.StringIO()
        inside_encode.append(0.0)
        t, c = time.perf_counter(), time.process_time()
        call_command("ingest", slug, str(folder), stdout=out)
        project_runs.append(time.perf_counter() - t)
        project_cpu.append(time.process_time() - c)
        result = json.loads(out.getvalue().strip().splitlines()[-1])
        texts = [
            c.index_text
            for c in Chunk.objects.filter(document__kb__slug=slug).order_by(
                "document_id", "ordinal"
            )
        ]
        assert sorted(texts) == sorted(engine_texts), (
            "the baseline must embed exactly the project's chunk texts"
        )
        after = baseline(32)  # plain encode (library default batch size), right after it
        # Symmetric in time around the project run, so load drift hits both sides alike.
        per_round.append((before + after) / 2 / project_runs[-1])
    same_bs = baseline(EMBED_BATCH)  # the project's own batch size: isolates pure overhead
    rss_after_ingest = peak_rss_mb()
    project_s, baseline_s = statistics.median(project_runs), statistics.median(baseline_runs)

    n = len(texts)
    lines = [
        {
            "case": "parse_chunk_only",
            "files": n_files,
            "chunks": n_pieces,
            "seconds": round(parse_chunk_s, 3),
            "share_of_baseline_encode": round(parse_chunk_s / baseline_s, 4),
        },
        {
            "case": "project",
            "documents": result["documents"],
            "failed": len(result["failed"]),  # type: ignore[arg-type]
            "chunks": n,
            "median_seconds": round(project_s, 3),
            "chunks_per_s": round(n / project_s, 2),
            "runs": [round(x, 3) for x in project_runs],
            "cpu_s": [round(x, 3) for x in project_cpu],
            "inside_encode_s": [round(x, 3) for x in inside_encode],
            "peak_rss_mb": rss_after_ingest,
            "rss_model_loaded_mb": rss_after_model,
        },
        {
            "case": "baseline_encode",
            "chunks": n,
            "median_seconds": round(baseline_s, 3),
            "chunks_per_s": round(n / baseline_s, 2),
            "runs": [round(x, 3) for x in baseline_runs],
            "cpu_s": [round(x, 3) for x in baseline_cpu],
        },
    ]
    ratio = statistics.median(per_round)
    lines.append(
        {
            "case": "ratio",
            "project_vs_encode_throughput": round(ratio, 4),
            "target": 0.85,
            "pass": ratio >= 0.85,
            "per_round": [round(x, 4) for x in per_round],
            "compared": "per round: mean of the encode runs just before and after / the project run; median",
            "baseline_at_project_batch_size_s": round(same_bs, 3),
            "project_batch_size": EMBED_BATCH,
            "cpu_time_ratio": round(
                statistics.median(baseline_cpu) / statistics.median(project_cpu), 4
            ),
            "encode_share_of_project": round(
                max(e / p for e, p in zip(inside_encode, project_runs, strict=False)), 4
            ),
            "torch_threads": __import__("torch").get_num_threads(),
        }
    )
    for line in lines:
        print(json.dumps(line), flush=True)
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
