"""A tiny training script that obeys the run-directory contract of :mod:`raftweb.train`, for
the worker-side tests (``RAFTWEB_TRAIN_MODULE=tests.training.fake_train``).

It "trains" for FAKE_TRAIN_STEPS steps (FAKE_TRAIN_STEP_S seconds each), appends a step event
per step to metrics.jsonl, writes ``checkpoints/checkpoint-<step>/`` every FAKE_TRAIN_CKPT_EVERY
steps (to a temporary name, renamed when complete) and resumes from the newest complete one,
stops before a step when CANCEL exists, then writes ``artifact/`` (via ``artifact.tmp/``) and a
done event. Other knobs: FAKE_TRAIN_FAIL_AT=<step> (crash with a traceback, exit 3),
FAKE_TRAIN_REPORT_FAILURE=1 (a done event with status failed), FAKE_TRAIN_NO_DONE=1 (exit 0
without a done event), FAKE_TRAIN_EMBEDDING_FROM=<sentence-transformers folder> (copied as the
embedding artifact).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def _event(run_dir: Path, **event: Any) -> None:
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(event) + "\n")


def _newest_checkpoint(run_dir: Path) -> int:
    steps = [
        int(p.name.split("-", 1)[1])
        for p in (run_dir / "checkpoints").glob("checkpoint-*")
        if p.name.split("-", 1)[1].isdigit() and (p / "state.json").is_file()
    ]
    return max(steps, default=0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    run_dir = Path(parser.parse_args().run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    rows = sum(1 for _ in (run_dir / "data" / "train.jsonl").open())
    total = int(os.environ.get("FAKE_TRAIN_STEPS", "6"))
    step_s = float(os.environ.get("FAKE_TRAIN_STEP_S", "0"))
    every = int(os.environ.get("FAKE_TRAIN_CKPT_EVERY", "2"))
    fail_at = int(os.environ.get("FAKE_TRAIN_FAIL_AT", "0"))
    print(f"fake training: {config['kind']} on {rows} rows, {total} steps", flush=True)

    start = _newest_checkpoint(run_dir)
    if start:
        print(f"resuming from checkpoint-{start}", flush=True)
    for step in range(start + 1, total + 1):
        if (run_dir / "CANCEL").exists():
            print(f"cancelled before step {step}", flush=True)
            return 0
        time.sleep(step_s)
        if step == fail_at:
            raise RuntimeError(f"CUDA out of memory at step {step} <script>alert(1)</script>")
        _event(
            run_dir,
            event="step",
            step=step,
            total_steps=total,
            epoch=round(step / total, 4),
            loss=round(2.0 / step, 4),
            learning_rate=1e-4,
            grad_norm=0.5,
            tokens_per_s=1000.0,
            ts=time.time(),
        )
        if step % every == 0:
            tmp = run_dir / "checkpoints" / f"checkpoint-{step}.tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            (tmp / "state.json").write_text(json.dumps({"step": step}))
            tmp.rename(run_dir / "checkpoints" / f"checkpoint-{step}")
    _event(run_dir, event="eval", step=total, eval_loss=0.75)
    if os.environ.get("FAKE_TRAIN_NO_DONE"):
        return 0
    if os.environ.get("FAKE_TRAIN_REPORT_FAILURE"):
        _event(run_dir, event="done", status="failed", error="loss went NaN", metrics={})
        return 1

    tmp = run_dir / "artifact.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    source = os.environ.get("FAKE_TRAIN_EMBEDDING_FROM")
    if config["kind"] == "embedding" and source:
        shutil.copytree(source, tmp)
    else:
        tmp.mkdir()
        (tmp / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "base_model_name_or_path": "tiny-base"})
        )
        (tmp / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    shutil.rmtree(run_dir / "artifact", ignore_errors=True)
    tmp.rename(run_dir / "artifact")
    _event(
        run_dir,
        event="done",
        status="succeeded",
        error=None,
        metrics={"train_loss": round(2.0 / total, 4), "eval_loss": 0.75, "steps": total},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
