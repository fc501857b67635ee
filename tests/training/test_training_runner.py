"""The worker side (training.runner) driving the contract-following fake script as a real
subprocess: claim, launch, tail, cancel, resume, adopt, and every way a run can fail."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.utils import timezone

from training import runner
from training.models import ModelVersion, TrainingMetric, TrainingRun
from training.runner import (
    training_command,
    training_run_claim,
    training_run_execute,
    training_run_tail,
)
from training.selectors import active_version, training_runs_stale, training_runs_waiting
from training.services import training_run_cancel, training_run_resume, training_run_start
from training.tasks import training_run_task, training_runs_resume_stale

pytestmark = pytest.mark.django_db


class WorkerKilled(BaseException):
    """Raised from the poll hook: the worker dies here, mid-run, without any clean-up."""


def _start(kb: Any, **kwargs: Any) -> TrainingRun:
    return training_run_start(kb=kb, kind=kwargs.pop("kind", "generator"), enqueue=False, **kwargs)


def _log(run: TrainingRun) -> str:
    return (Path(run.run_dir) / "log.txt").read_text()


def _step_events(run: TrainingRun) -> list[int]:
    return list(
        TrainingMetric.objects.filter(run=run, event="step")
        .order_by("line")
        .values_list("step", flat=True)
    )


def _make_stale(run: TrainingRun, settings: Any) -> None:
    old = timezone.now() - timedelta(seconds=settings.TRAIN_STALE_S + 5)
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=old)


def _hook(monkeypatch: pytest.MonkeyPatch, when: Any) -> None:
    """Call ``when(run)`` after every poll with the run as the database has it."""
    monkeypatch.setattr(runner, "after_poll", lambda run: when(TrainingRun.objects.get(pk=run.pk)))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_it_trains_a_run_to_the_end_and_records_its_version(tv_kb: Any) -> None:
    run = _start(tv_kb)
    run = training_run_execute(run_id=run.pk)
    assert run is not None and run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert (run.step, run.total_steps, run.progress, run.attempts) == (6, 6, 1.0, 1)
    assert run.metrics == {"train_loss": 0.3333, "eval_loss": 0.75, "steps": 6}
    assert run.error == "" and run.pid is None and run.finished_at is not None
    rows = list(TrainingMetric.objects.filter(run=run).order_by("line"))
    assert [r.line for r in rows] == list(range(8))
    assert [r.event for r in rows] == ["step"] * 6 + ["eval", "done"]
    assert [r.step for r in rows[:6]] == [1, 2, 3, 4, 5, 6]
    assert rows[0].values["loss"] == 2.0
    version = ModelVersion.objects.get(run=run)
    assert version.kb == tv_kb and version.kind == "generator" and version.is_adapter
    assert version.base_model == "tiny-base"
    assert version.path == str(Path(run.run_dir) / "artifact")
    assert version.dataset_hash == run.data_hash and len(run.data_hash) == 64
    assert version.metrics == run.metrics
    assert "fake training: generator on 9 rows, 6 steps" in _log(run)
    # Not activated unless asked.
    assert active_version(kb=tv_kb, kind="generator") is None


def test_it_activates_the_new_version_when_asked(tv_kb: Any) -> None:
    run = training_run_execute(run_id=_start(tv_kb, activate=True).pk)
    assert run is not None and run.status == "succeeded"
    assert active_version(kb=tv_kb, kind="generator") == ModelVersion.objects.get(run=run)


def test_a_run_that_fails_to_save_leaves_the_previous_version_active(
    tv_kb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while saving: the script reports the failure (the generator script's own test
    shows the message and that no half artifact is kept); the active version does not move."""
    first = training_run_execute(run_id=_start(tv_kb, activate=True).pk)
    assert first is not None and first.status == "succeeded"
    previous = active_version(kb=tv_kb, kind="generator")
    assert previous is not None

    monkeypatch.setenv("FAKE_TRAIN_REPORT_FAILURE", "1")
    second = training_run_execute(run_id=_start(tv_kb, activate=True).pk)
    assert second is not None and second.status == "failed"
    assert not ModelVersion.objects.filter(run=second).exists()
    assert active_version(kb=tv_kb, kind="generator") == previous


def test_it_tails_each_metrics_line_exactly_once(tv_kb: Any) -> None:
    run = _start(tv_kb)
    path = Path(run.run_dir) / "metrics.jsonl"
    events = [{"event": "step", "step": s, "total_steps": 10, "loss": 1.0 / s} for s in (1, 2, 3)]
    half = json.dumps({"event": "step", "step": 4, "total_steps": 10, "loss": 0.25})
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + half[:20])

    assert training_run_tail(run=run).lines == 3
    assert training_run_tail(run=run).lines == 0  # the same object again
    assert training_run_tail(run=TrainingRun.objects.get(pk=run.pk)).lines == 0  # a fresh read
    # A reader that still holds the old offset stores nothing twice and moves nothing back.
    stale_copy = TrainingRun.objects.get(pk=run.pk)
    stale_copy.metrics_offset, stale_copy.metrics_lines = 0, 0
    assert training_run_tail(run=stale_copy).lines == 0
    assert TrainingMetric.objects.filter(run=run).count() == 3
    fresh = TrainingRun.objects.get(pk=run.pk)
    assert (fresh.step, fresh.total_steps, fresh.progress) == (3, 10, 0.3)
    assert fresh.metrics_lines == 3

    # The half-written line is read once it is complete.
    with path.open("a") as fh:
        fh.write(half[20:] + "\n")
    assert training_run_tail(run=fresh).lines == 1
    assert training_run_tail(run=fresh).lines == 0
    assert _step_events(run) == [1, 2, 3, 4]
    assert TrainingMetric.objects.get(run=run, line=3).values["loss"] == 0.25


def test_it_keeps_a_second_run_of_the_kb_queued_while_one_runs(tv_kb: Any) -> None:
    first, second = _start(tv_kb), _start(tv_kb)
    assert training_run_claim(run_id=first.pk) is not None

    result = training_run_execute(run_id=second.pk)
    assert result is not None and result.status == TrainingRun.Status.QUEUED
    assert result.attempts == 0 and result.pid is None
    assert not (Path(second.run_dir) / "log.txt").exists(), "the second run's script started"
    assert training_runs_waiting() == []

    TrainingRun.objects.filter(pk=first.pk).update(status=TrainingRun.Status.SUCCEEDED)
    assert training_runs_waiting() == [second.pk]
    result = training_run_execute(run_id=second.pk)
    assert result is not None and result.status == TrainingRun.Status.SUCCEEDED


def test_it_starts_the_kbs_next_queued_run_when_one_ends(tv_kb: Any) -> None:
    first, second = _start(tv_kb), _start(tv_kb)
    training_run_task(first.pk)  # Huey runs tasks in-process in the tests
    statuses = dict(TrainingRun.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "succeeded", second.pk: "succeeded"}


def test_it_lets_exactly_one_of_two_claims_through(tv_kb: Any, settings: Any) -> None:
    run = _start(tv_kb)
    token = training_run_claim(run_id=run.pk)
    assert token is not None
    assert training_run_claim(run_id=run.pk) is None  # running, heartbeat fresh
    _make_stale(run, settings)
    successor = training_run_claim(run_id=run.pk)
    assert successor is not None and successor != token
    # The worker taken for dead can no longer write to the run.
    (Path(run.run_dir) / "metrics.jsonl").write_text('{"event": "step", "step": 1}\n')
    run.refresh_from_db()
    assert training_run_tail(run=run, token=token).lines == 0
    assert training_run_tail(run=run, token=successor).lines == 1


def test_it_cancels_a_queued_run_at_once(tv_kb: Any) -> None:
    run = training_run_cancel(run=_start(tv_kb))
    assert run.status == TrainingRun.Status.CANCELLED and run.finished_at is not None
    run = training_run_execute(run_id=run.pk)
    assert run is not None and run.status == "cancelled" and run.attempts == 0


def test_it_cancels_a_running_run(tv_kb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRAIN_STEPS", "400")
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "0.02")

    seen: list[tuple[int, float | None, float]] = []

    def cancel_at_step_3(run: TrainingRun) -> None:
        seen.append((run.step, run.eta_seconds, run.progress))
        if run.step >= 3 and not run.cancel_requested:
            training_run_cancel(run=run)

    _hook(monkeypatch, cancel_at_step_3)
    run = training_run_execute(run_id=_start(tv_kb).pk)
    assert run is not None and run.status == TrainingRun.Status.CANCELLED, run.error
    # While it ran: progress and an ETA from its pace (about 400 steps x 0.02 s left).
    step, eta, progress = next(s for s in seen if s[0] >= 3)
    assert progress == pytest.approx(step / 400)
    assert eta is not None and 1 < eta < 60
    assert 3 <= run.step < 400
    assert (Path(run.run_dir) / "CANCEL").exists()
    assert "cancelled before step" in _log(run)
    assert not ModelVersion.objects.filter(run=run).exists()


def test_it_stops_a_script_that_ignores_the_cancel(
    tv_kb: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_STEPS", "3")
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "60")  # one very long step
    settings.TRAIN_CANCEL_GRACE_S = 0.3
    run = _start(tv_kb)

    def cancel_mid_step(r: TrainingRun) -> None:
        # Once the script is inside its first (minute-long) step, it never looks at CANCEL.
        if not r.cancel_requested and "fake training" in _log(r):
            training_run_cancel(run=r)

    _hook(monkeypatch, cancel_mid_step)
    began = time.monotonic()
    run = training_run_execute(run_id=run.pk)
    took = time.monotonic() - began
    assert run is not None and run.status == TrainingRun.Status.CANCELLED
    assert "cancelled before step" not in _log(run)
    assert 0.3 < took < 20


def test_it_resumes_a_run_whose_worker_and_process_were_killed(
    tv_kb: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_STEPS", "10")
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "0.05")
    killed: list[int] = []

    def kill_everything_at_step_5(run: TrainingRun) -> None:
        if run.step >= 5:
            os.kill(run.pid, signal.SIGKILL)
            killed.append(run.pid)
            raise WorkerKilled()

    _hook(monkeypatch, kill_everything_at_step_5)
    run = _start(tv_kb)
    with pytest.raises(WorkerKilled):
        training_run_execute(run_id=run.pk)
    monkeypatch.setattr(runner, "after_poll", None)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING and run.attempts == 1
    deadline = time.monotonic() + 10
    while _alive(killed[0]) and time.monotonic() < deadline:
        time.sleep(0.05)

    # Its heartbeat is fresh: nobody takes it over yet.
    assert training_runs_stale() == []
    training_runs_resume_stale()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING and run.attempts == 1

    _make_stale(run, settings)
    assert training_runs_stale() == [run.pk]
    training_runs_resume_stale()  # the periodic task (Huey runs it in-process here)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.attempts == 2 and run.step == 10
    log = _log(run)
    assert "resuming from checkpoint-" in log
    resumed_from = int(log.split("resuming from checkpoint-")[1].split()[0])
    assert resumed_from >= 4
    steps = _step_events(run)
    # Every step is there; only the ones after the checkpoint were done twice.
    assert sorted(set(steps)) == list(range(1, 11))
    assert steps[-(10 - resumed_from) :] == list(range(resumed_from + 1, 11))
    assert steps.count(1) == 1
    lines = list(TrainingMetric.objects.filter(run=run).values_list("line", flat=True))
    assert len(lines) == len(set(lines)) == run.metrics_lines
    assert ModelVersion.objects.filter(run=run).count() == 1


def test_it_adopts_a_training_process_that_outlived_its_worker(
    tv_kb: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_STEPS", "12")
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "0.05")

    def worker_dies(run: TrainingRun) -> None:
        if run.step >= 2:
            raise WorkerKilled()

    _hook(monkeypatch, worker_dies)
    run = _start(tv_kb)
    with pytest.raises(WorkerKilled):
        training_run_execute(run_id=run.pk)
    monkeypatch.setattr(runner, "after_poll", None)
    run.refresh_from_db()
    pid = run.pid
    assert pid is not None and _alive(pid)
    _make_stale(run, settings)
    run = training_run_execute(run_id=run.pk)
    assert run is not None and run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.attempts == 1, "the live process was started again instead of adopted"
    assert _log(run).count("=== ") == 1
    assert _step_events(run) == list(range(1, 13))


def test_it_finishes_a_run_whose_done_event_no_worker_read(tv_kb: Any, settings: Any) -> None:
    run = _start(tv_kb)
    assert training_run_claim(run_id=run.pk) is not None
    # The script finished while its worker was gone.
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(settings.BASE_DIR)}
    subprocess.run(training_command(Path(run.run_dir)), env=env, check=True, capture_output=True)
    _make_stale(run, settings)
    run = training_run_execute(run_id=run.pk)
    assert run is not None and run.status == "succeeded" and run.attempts == 0
    assert ModelVersion.objects.filter(run=run).exists()


def test_it_fails_clearly_when_the_run_directory_disappears(
    tv_kb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_STEPS", "400")
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "0.02")
    pids: list[int] = []

    def delete_at_step_2(run: TrainingRun) -> None:
        if run.step >= 2 and Path(run.run_dir).exists():
            pids.append(run.pid)
            # Moved away in one step (the script is still writing into it).
            os.rename(run.run_dir, run.run_dir + ".gone")

    _hook(monkeypatch, delete_at_step_2)
    run = _start(tv_kb)
    run = training_run_execute(run_id=run.pk)
    assert run is not None and run.status == TrainingRun.Status.FAILED
    assert run.error == f"run directory {run.run_dir} disappeared"
    assert not _alive(pids[0]), "the training process was left running"
    with pytest.raises(Exception, match="disappeared"):
        training_run_resume(run=run)


def test_it_fails_with_the_end_of_the_log_when_the_script_crashes_and_resumes_after(
    tv_kb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_FAIL_AT", "3")
    run = training_run_execute(run_id=_start(tv_kb).pk)
    assert run is not None and run.status == TrainingRun.Status.FAILED
    assert run.error.startswith("the training process failed with exit code 1; the end of log.txt:")
    assert "RuntimeError: CUDA out of memory at step 3" in run.error
    assert not ModelVersion.objects.filter(run=run).exists()

    monkeypatch.delenv("FAKE_TRAIN_FAIL_AT")
    run = training_run_resume(run=run, enqueue=False)
    assert run.status == TrainingRun.Status.QUEUED and run.error == ""
    run = training_run_execute(run_id=run.pk)
    assert run is not None and run.status == TrainingRun.Status.SUCCEEDED
    assert run.attempts == 2 and "resuming from checkpoint-2" in _log(run)
    assert _step_events(run) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FAKE_TRAIN_REPORT_FAILURE": "1"}, "loss went NaN"),
        ({"FAKE_TRAIN_NO_DONE": "1"}, "the training process exited without reporting a result"),
    ],
)
def test_it_fails_when_the_script_does_not_succeed(
    env: dict[str, str], message: str, tv_kb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = training_run_execute(run_id=_start(tv_kb).pk)
    assert run is not None and run.status == TrainingRun.Status.FAILED
    assert run.error.startswith(message)
    assert not ModelVersion.objects.filter(run=run).exists()


def test_it_fails_clearly_when_the_training_module_is_missing(tv_kb: Any, settings: Any) -> None:
    settings.TRAIN_MODULE = "tests.training.no_such_script"
    run = training_run_execute(run_id=_start(tv_kb).pk)
    assert run is not None and run.status == TrainingRun.Status.FAILED
    assert (
        "exit code 1" in run.error and "No module named tests.training.no_such_script" in run.error
    )


def test_it_builds_the_launch_command(settings: Any, tmp_path: Path) -> None:
    assert training_command(tmp_path) == [
        sys.executable,
        "-m",
        "tests.training.fake_train",
        "--run-dir",
        str(tmp_path),
    ]
    settings.TRAIN_LAUNCHER = "accelerate"
    settings.TRAIN_ACCELERATE_ARGS = "--num_processes 2 --mixed_precision bf16"
    assert training_command(tmp_path) == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--mixed_precision",
        "bf16",
        "-m",
        "tests.training.fake_train",
        "--run-dir",
        str(tmp_path),
    ]
