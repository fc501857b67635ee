"""The generator training script end to end, as the worker runs it:
``python -m raftweb.train.run --run-dir DIR`` on the tiny model and synthetic RAFT rows.

Contract checked: step / eval / done events in metrics.jsonl (the done metrics named
train_loss_first, train_loss_last, eval_loss, steps, tokens_per_s), the artifact (a full model
or a peft adapter that loads with from_pretrained), resume after a SIGKILL from the newest
checkpoint, and CANCEL."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from raftweb.train import generator
from tests.engine.train.generator_runs import (
    done_event,
    events,
    log_text,
    make_run_dir,
    run_script,
    start,
    wait_until,
)

pytestmark = pytest.mark.slow

CONTRACT_METRICS = {"train_loss_first", "train_loss_last", "eval_loss", "steps", "tokens_per_s"}


def test_it_runs_the_cpu_smoke_recipe_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run", tiny_model_dir, rows=80, eval_rows=6)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "full" and config["max_steps"] == 10

    assert run_script(run_dir) == generator.EXIT_SUCCEEDED, log_text(run_dir)[-3000:]

    steps = events(run_dir, "step")
    assert [e["step"] for e in steps] == list(range(1, 11))  # logging_steps 1, max_steps 10
    for e in steps:
        assert e["total_steps"] == 10
        assert {"epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "ts"} <= set(e)
        assert e["tokens_per_s"] > 0
        # Real tokens of the step's 2 rows (batch 2): never the padded size of the batch.
        assert 2 * 250 < e["tokens"] <= 2 * 384
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.3  # it learns
    evals = events(run_dir, "eval")
    assert [e["step"] for e in evals] == [5, 10]  # at every checkpoint (save_steps 5)
    assert all(e["eval_loss"] > 0 for e in evals)

    done = done_event(run_dir)
    assert done == events(run_dir)[-1]
    assert done["status"] == "succeeded" and done["error"] == ""
    metrics = done["metrics"]
    assert CONTRACT_METRICS <= set(metrics)
    assert metrics["steps"] == 10
    assert metrics["train_loss_first"] == steps[0]["loss"]
    assert metrics["train_loss_last"] == steps[-1]["loss"]
    assert metrics["eval_loss"] == evals[-1]["eval_loss"]
    assert metrics["tokens_per_s"] > 0
    assert metrics["eval_rows"] == 6  # data/eval.jsonl is used when it has rows
    assert metrics["train_rows"] == 80

    # The artifact: a full model + tokenizer, through the real from_pretrained path.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    artifact = run_dir / "artifact"
    assert not (run_dir / "artifact.tmp").exists()
    assert not (artifact / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(artifact)
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    assert tokenizer.chat_template
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.embed_tokens.weight"
    assert not base.state_dict()[name].equal(model.state_dict()[name])  # trained weights
    assert (run_dir / "checkpoints" / "checkpoint-10" / "trainer_state.json").is_file()


def test_it_resumes_after_a_kill_and_ends_with_the_right_step_count(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # LoRA, 8 steps of 4 rows (slow enough to be killed mid-way), a checkpoint every 3 steps.
    run_dir = make_run_dir(
        tmp_path / "run",
        tiny_model_dir,
        rows=48,
        method="lora",
        lora_rank=8,
        max_steps=8,
        save_steps=3,
        eval_share=0,
        batch_size=2,
        gradient_accumulation=2,
    )
    first = start(run_dir)
    try:
        # The first complete checkpoint (its trainer_state.json written and readable).
        wait_until(lambda: generator.latest_checkpoint(run_dir / "checkpoints") is not None, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert not events(run_dir, "done")
    killed_at = max(e["step"] for e in events(run_dir, "step"))
    assert killed_at < 8

    assert run_script(run_dir) == generator.EXIT_SUCCEEDED, log_text(run_dir)[-3000:]
    resumed = events(run_dir, "resume")
    assert len(resumed) == 1 and resumed[0]["step"] >= 3
    assert f"resuming from {run_dir / 'checkpoints' / resumed[0]['checkpoint']}" in log_text(
        run_dir
    )
    all_events = events(run_dir)
    after = all_events[all_events.index(resumed[0]) + 1 :]
    after_steps = [e["step"] for e in after if e["event"] == "step"]
    assert after_steps[0] == resumed[0]["step"] + 1 > 3  # continued, not restarted at step 1
    assert after_steps[-1] == 8
    done = done_event(run_dir)
    assert done["status"] == "succeeded"
    assert done["metrics"]["steps"] == 8
    # train_loss_first is still the loss of step 1 (from the killed attempt).
    assert done["metrics"]["train_loss_first"] == events(run_dir, "step")[0]["loss"]

    # The artifact is a peft adapter over the base model.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    artifact = run_dir / "artifact"
    adapter = json.loads((artifact / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16  # alpha 0 = 2 x rank
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, artifact)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_it_stops_on_cancel_with_a_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = make_run_dir(
        tmp_path / "run",
        tiny_model_dir,
        rows=64,
        max_steps=40,
        save_steps=100,
        batch_size=4,
        gradient_accumulation=2,
    )
    proc = start(run_dir)
    try:
        wait_until(lambda: bool(events(run_dir, "step")), proc)
        (run_dir / "CANCEL").touch()
        assert proc.wait(timeout=60) == generator.EXIT_CANCELLED
    finally:
        if proc.poll() is None:
            proc.kill()
    done = done_event(run_dir)
    assert done["status"] == "cancelled"
    stopped = done["metrics"]["steps"]
    assert 1 <= stopped < 40
    assert max(e["step"] for e in events(run_dir, "step")) == stopped
    # A checkpoint at the step it stopped at (so a resume continues), and no artifact.
    assert generator.latest_checkpoint(run_dir / "checkpoints").name == f"checkpoint-{stopped}"
    assert not (run_dir / "artifact").exists()
