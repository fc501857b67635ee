"""Benchmark: embedding fine-tuning speed — ``raftweb.train.embedding.run`` vs. a plain
sentence-transformers script on the same data and settings.

Cases (same process, same synthetic pairs, same model, one epoch, MultipleNegativesRankingLoss,
no-duplicates batches, the same batch size, learning rate, warm-up and seed):

* ``plain`` — load the model, ``SentenceTransformerTrainer(...).train()``, ``model.save()``:
  the minimum a hand-written script does;
* ``raftweb`` — ``run(run_dir)`` on a run directory holding the same pairs (config.json and
  data/train.jsonl; no eval rows, so no before/after retrieval is measured): what it adds is
  reading the files, the contract's step events, the CANCEL check, token counting, the
  checkpoint timer and the artifact rename.

Each case prints one JSON line with seconds and seconds per 1,000 pairs; a last line gives the
ratio raftweb / plain (target <= 1.1). The data is synthetic (no downloads, no Django):
questions of ~12 words, passages of ``--passage-words`` words, ``--negatives`` distractors per
row, like RAFT rows.

    .venv/bin/python bench/train_embedding.py [--pairs 256] [--device cpu|cuda] [--negatives 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = (
    "battery screen camera settings tap swipe notification network wireless charge display "
    "account privacy location update storage backup security sound vibration keyboard wallpaper "
    "bluetooth contacts gallery message call volume brightness lock fingerprint face alarm clock "
    "calendar email browser download install restart power mode theme font size language"
).split()


def make_pairs(n: int, *, negatives: int, passage_words: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(words: int, tag: str) -> str:
        return f"{tag} " + " ".join(rng.choice(WORDS) for _ in range(words)) + "."

    return [
        {
            "query": text(12, f"How do I {i}?"),
            "positive": text(passage_words, f"Section {i}."),
            "negatives": [text(passage_words, f"Section {i}-{j}.") for j in range(negatives)],
        }
        for i in range(n)
    ]


def plain(pairs: list[dict], args: argparse.Namespace, model_path: str, out: Path) -> float:
    """A minimal sentence-transformers script: the baseline."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    try:
        from sentence_transformers.base.sampler import BatchSamplers
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
    except ImportError:  # sentence-transformers < 6 (the old paths are deprecated in 6)
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers

    t0 = time.perf_counter()
    model = SentenceTransformer(model_path, device=args.device)
    columns = {"anchor": [p["query"] for p in pairs], "positive": [p["positive"] for p in pairs]}
    for j in range(args.negatives):
        columns[f"negative_{j + 1}"] = [p["negatives"][j] for p in pairs]
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=1,
        per_device_train_batch_size=args.batch_size,
        learning_rate=2e-5,
        warmup_steps=0.1,
        seed=42,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args,
        train_dataset=Dataset.from_dict(columns),
        loss=MultipleNegativesRankingLoss(model),
    )
    trainer.train()
    model.save(str(out / "model"))
    return time.perf_counter() - t0


def ours(pairs: list[dict], args: argparse.Namespace, model_path: str, out: Path) -> float:
    from raftweb.train.embedding import EXIT_SUCCEEDED, run

    (out / "data").mkdir(parents=True)
    config = {
        "kind": "embedding",
        "base_model": model_path,
        "epochs": 1,
        "batch_size": args.batch_size,
        "learning_rate": 2e-5,
        "warmup_ratio": 0.1,
        "seed": 42,
        "use_hard_negatives": args.negatives > 0,
    }
    (out / "config.json").write_text(json.dumps(config))
    with (out / "data" / "train.jsonl").open("w") as fh:
        for p in pairs:
            fh.write(json.dumps(p) + "\n")
    t0 = time.perf_counter()
    code = run(out)
    seconds = time.perf_counter() - t0
    if code != EXIT_SUCCEEDED:
        raise SystemExit(f"run() failed: {(out / 'metrics.jsonl').read_text()[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--negatives", type=int, default=3, help="distractors per row (0-4)")
    parser.add_argument("--passage-words", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="name or local path")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the cases this often")
    args = parser.parse_args()
    if args.device == "cpu":
        # run() picks CUDA when it sees one; hide it so that both cases use the CPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    from raftweb.retrieval.embedder import resolve_model_path

    model_path = resolve_model_path(args.model)
    pairs = make_pairs(args.pairs, negatives=args.negatives, passage_words=args.passage_words)

    # Warm-up (imports, kernels, page cache) so that neither case pays it alone.
    warm = tempfile.mkdtemp(prefix="bench-emb-")
    try:
        small = argparse.Namespace(**{**vars(args), "batch_size": 8})
        with contextlib.redirect_stdout(sys.stderr):
            plain(pairs[:16], small, model_path, Path(warm) / "plain")
            ours(pairs[:16], small, model_path, Path(warm) / "ours")
    finally:
        shutil.rmtree(warm, ignore_errors=True)

    cases = {"plain": plain, "raftweb": ours}
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            out = Path(tempfile.mkdtemp(prefix=f"bench-emb-{name}-"))
            try:
                # The trainer prints its logs on stdout: keep stdout for the JSON lines.
                with contextlib.redirect_stdout(sys.stderr):
                    cpu0 = time.process_time()
                    seconds[name].append(fn(pairs, args, model_path, out))
                    # CPU time too: on a shared machine wall time mostly measures the neighbours.
                    cpu_seconds[name].append(time.process_time() - cpu0)
            finally:
                shutil.rmtree(out, ignore_errors=True)
    best = {name: min(values) for name, values in seconds.items()}
    best_cpu = {name: min(values) for name, values in cpu_seconds.items()}
    for name in cases:
        print(
            json.dumps(
                {
                    "case": name,
                    "device": args.device,
                    "pairs": args.pairs,
                    "negatives": args.negatives,
                    "batch_size": args.batch_size,
                    "seconds": round(best[name], 2),
                    "seconds_per_1000_pairs": round(best[name] * 1000 / args.pairs, 2),
                    "all_seconds": [round(s, 2) for s in seconds[name]],
                    "cpu_seconds": round(best_cpu[name], 2),
                    "threads": torch.get_num_threads(),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )
    ratio = best["raftweb"] / best["plain"]
    cpu_ratio = best_cpu["raftweb"] / best_cpu["plain"]
    print(
        json.dumps(
            {
                "case": "ratio",
                "raftweb_over_plain": round(ratio, 3),
                "cpu_time_ratio": round(cpu_ratio, 3),
                "target": 1.1,
                "ok": ratio <= 1.1,
            }
        )
    )


if __name__ == "__main__":
    main()
