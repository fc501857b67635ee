"""The worker side with the REAL training script (raftweb.train.run) on a tiny generator built
on the spot: data written by the service, trained in a subprocess, tailed, versioned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_it_trains_a_generator_with_the_real_script_and_registers_the_version(
    tv_kb: Any, tiny_model_dir: Path, settings: Any
) -> None:
    from training.models import ModelVersion, TrainingMetric
    from training.runner import training_run_execute
    from training.services import training_run_start

    settings.TRAIN_MODULE = "raftweb.train.run"
    run = training_run_start(
        kb=tv_kb,
        kind="generator",
        preset="cpu-smoke",
        overrides={"base_model": str(tiny_model_dir), "max_steps": 4, "save_steps": 2},
        enqueue=False,
    )
    assert run.rows_train >= 1 and run.rows_from_feedback == 1
    run = training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    log = (Path(run.run_dir) / "log.txt").read_text(errors="replace")[-3000:]
    assert run.status == "succeeded", (run.error, log)
    for key in ("train_loss_first", "train_loss_last", "eval_loss", "steps", "tokens_per_s"):
        assert key in run.metrics, run.metrics
    assert run.metrics["steps"] == 4 and run.step == 4
    assert TrainingMetric.objects.filter(run=run, event="step").count() >= 4
    version = ModelVersion.objects.get(run=run)
    assert version.kind == "generator" and Path(version.path, "config.json").exists()
