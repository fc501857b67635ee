"""The generator script's clear failures: each ends in a ``done`` event saying what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftweb.train import generator
from tests.engine.train.generator_runs import done_event, events, make_run_dir


def test_it_refuses_qlora_without_cuda_before_loading_anything(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run_dir(tmp_path / "run", tiny_model_dir, preset="qlora-1gpu")
    loaded: list[str] = []
    monkeypatch.setattr(generator, "load_tokenizer", lambda *a: loaded.append("tokenizer"))
    monkeypatch.setattr(generator, "load_model", lambda *a, **k: loaded.append("model"))
    monkeypatch.setattr(generator, "cuda_available", lambda: False)

    assert generator.run(run_dir) == generator.EXIT_FAILED
    done = done_event(run_dir)
    assert done["status"] == "failed"
    assert done["error"] == (
        "QLoRA needs a CUDA GPU and the bitsandbytes package; use --method lora or full"
    )
    assert loaded == []


def test_it_names_the_setting_when_the_base_model_is_missing(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run_dir(tmp_path / "a", tiny_model_dir, base_model="/nonexistent/model")
    assert generator.run(run_dir) == generator.EXIT_FAILED
    error = done_event(run_dir)["error"]
    assert "'/nonexistent/model' (from base_model): no such model folder" in error
    assert "base_model (--base-model" in error and "RAFTWEB_STUDENT_MODEL" in error

    # Empty base_model: the student model's setting is the one named.
    monkeypatch.setenv("RAFTWEB_STUDENT_MODEL", str(tmp_path / "no-such-student"))
    run_dir = make_run_dir(tmp_path / "b", tiny_model_dir, base_model="")
    assert generator.run(run_dir) == generator.EXIT_FAILED
    error = done_event(run_dir)["error"]
    assert "no-such-student' (from RAFTWEB_STUDENT_MODEL): no such model folder" in error
    assert not events(run_dir, "step")


def test_it_reports_out_of_memory_and_keeps_the_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from trl import SFTTrainer

    run_dir = make_run_dir(tmp_path / "run", tiny_model_dir, max_steps=6, save_steps=2)
    real_step = SFTTrainer.training_step

    def training_step(self, *args, **kwargs):  # the 4th optimizer step does not fit
        if self.state.global_step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", training_step)
    assert generator.run(run_dir) == generator.EXIT_FAILED
    done = done_event(run_dir)
    assert done["status"] == "failed"
    assert done["error"].startswith("out of memory (CUDA out of memory. Tried to allocate")
    assert "Lower batch_size" in done["error"]
    assert "checkpoint-2 is kept; a re-run resumes from it" in done["error"]
    assert generator.latest_checkpoint(run_dir / "checkpoints").name == "checkpoint-2"
    assert done["metrics"]["train_loss_first"] is not None  # what was logged before
    assert not (run_dir / "artifact").exists()


def test_a_full_disk_while_saving_fails_clearly_and_keeps_no_half_artifact(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from trl import SFTTrainer

    run_dir = make_run_dir(tmp_path / "run", tiny_model_dir, max_steps=4, save_steps=2)

    real_save = SFTTrainer.save_model

    def save_model(self, output_dir=None, *args, **kwargs):  # the artifact: half, then ENOSPC
        if not str(output_dir).endswith("artifact.tmp"):
            return real_save(self, output_dir, *args, **kwargs)  # checkpoints still fit
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SFTTrainer, "save_model", save_model)
    assert generator.run(run_dir) == generator.EXIT_FAILED
    error = done_event(run_dir)["error"]
    assert error.startswith("the disk is full (No space left on device) while writing under")
    assert "checkpoint-4 is kept; a re-run resumes from it" in error
    assert not (run_dir / "artifact").exists() and not (run_dir / "artifact.tmp").exists()


def test_it_ends_at_once_when_cancel_is_already_there(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run", tiny_model_dir)
    (run_dir / "CANCEL").touch()
    assert generator.run(run_dir) == generator.EXIT_CANCELLED
    assert done_event(run_dir)["status"] == "cancelled"
    assert not (run_dir / "checkpoints").exists()


def test_it_fails_clearly_on_bad_data(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run", tiny_model_dir)
    (run_dir / "data" / "train.jsonl").write_text('{"question": "q", "cot_answer": "a"}\n[1]\n')
    assert generator.run(run_dir) == generator.EXIT_FAILED
    assert done_event(run_dir)["error"] == "train.jsonl line 2: expected a JSON object"
    (run_dir / "data" / "train.jsonl").write_text("")
    assert generator.run(run_dir) == generator.EXIT_FAILED
    assert done_event(run_dir)["error"] == "data/train.jsonl has no training rows"
