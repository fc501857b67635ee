"""The quality bar of the evaluation issue, end to end on the CPU: build the tiny model, import
~200 RAFT rows with chain-of-thought answers as approved train rows, train the generator with
``--preset cpu-smoke``, then evaluate ``gen=base`` against ``gen=active`` on held-out questions
of the same manual. The tuned model's parse success must be at least 0.5 and the base one's 0;
the judge is unavailable, so judge metrics are null and the rest is computed; the run
completes and its dashboard renders."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from raftweb.testing.tiny_model import synthetic_raft_rows

pytestmark = pytest.mark.slow

# The manual the held-out questions are about: facts in the training rows' own pattern.
MANUAL = {
    "invoice.txt": "The invoice code is 17 and the word is lazy.",
    "refund.txt": "The refund code is 42 and the word is brown.",
    "password.txt": "The password code is 8 and the word is thirty.",
    "fox.txt": "The fox code is 63 and the word is score.",
}
HELD_OUT = [
    {"question": f"What is the {name.split('.')[0]} code?", "answer": text.split()[4],
     "gold": [name]}
    for name, text in MANUAL.items()
]  # fmt: skip
# cpu-smoke's recipe with enough steps (and a step size fit for a random 2-layer model) for the
# tiny model to learn the answer format.
TRAIN_CONFIG = {"max_steps": 60, "learning_rate": 3e-3, "save_steps": 60, "eval_share": 0.05}
# The rows' chain of thought is one fixed sentence: a random 2-layer model trained for a minute
# learns a format, not to copy quotes (copying sends it into loops before its <ANSWER>: tag).
REASONING = "Reasoning: one document of the context gives this code, so the answer is that code."


def _rows() -> list[Any]:
    from raftweb.raft.formats import RaftRow

    rows, seen = [], set()
    for r in synthetic_raft_rows(400, seed=3, docs=(1, 3)):
        # One row per question and answer: the import counts a repeated pair once.
        if (r["question"], r["final_answer"]) in seen or len(rows) == 200:
            continue
        seen.add((r["question"], r["final_answer"]))
        r["cot_answer"] = f"{REASONING}\n<ANSWER>: {r['final_answer']}"
        rows.append(RaftRow(**r))
    return rows


def test_it_meets_the_quality_bar_on_the_cpu(
    db: Any,
    tiny_model_dir: Path,
    judge_down: None,
    settings: Any,
    tmp_path: Path,
    client_for: Any,
    alice: Any,
) -> None:
    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload, kb_create
    from raftweb.core.services import profile_update
    from raftweb.raft.formats import rows_to_jsonl

    settings.TRAIN_RUNS_DIR = tmp_path / "runs"
    settings.TRAIN_POLL_S = 0.2
    settings.EVAL_MAX_TOKENS = 96
    profile_update(role="student", user=None, backend="hf", model=str(tiny_model_dir))
    kb = kb_create(name="Codes", slug="codes")
    for name, text in MANUAL.items():
        upload = document_upload(kb=kb, name=name, chunks=[text.encode()], enqueue=False)
        document_ingest(document_id=upload.document.pk)

    data = tmp_path / "raft.jsonl"
    data.write_text(rows_to_jsonl(_rows(), "hf"))
    out = StringIO()
    call_command("import_qa", "codes", str(data), "--status", "approved", "--split", "train",
                 stdout=out, stderr=StringIO())  # fmt: skip
    assert json.loads(out.getvalue().strip().splitlines()[-1])["imported"] == 200

    out = StringIO()
    call_command("train", "codes", "--kind", "generator", "--preset", "cpu-smoke",
                 "--base-model", str(tiny_model_dir), "--config", json.dumps(TRAIN_CONFIG),
                 "--wait", "--activate", "--force", stdout=out, stderr=StringIO())  # fmt: skip
    trained = json.loads(out.getvalue().strip().splitlines()[-1])
    assert trained["status"] == "succeeded", out.getvalue()[-2000:]

    questions = tmp_path / "held_out.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in HELD_OUT))
    out = StringIO()
    call_command("evaluate", "codes", "--questions", str(questions), "--config",
                 "emb=base,gen=base", "--config", "emb=base,gen=active", "--mode", "bm25",
                 "--k", "3", "--wait", stdout=out, stderr=StringIO())  # fmt: skip
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    base, tuned = (c["metrics"] for c in report["configs"])
    assert base["parse_success"] == 0.0, report
    assert tuned["parse_success"] >= 0.5, report
    for metrics in (base, tuned):
        assert metrics["judge_hard"] is None and metrics["judge_soft"] is None
        assert metrics["recall@k"] == 1.0 and metrics["latency_p50_ms"] > 0
    counts = report["configs"][1]["counts"]
    assert counts["judge_hard"]["reason"].startswith("judge unavailable")
    page = client_for(alice).get(f"/evaluation/runs/{report['run']}/")
    assert page.status_code == 200 and b'id="eval-matrix"' in page.content
