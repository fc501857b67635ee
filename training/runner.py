"""Worker-side training runner.

A run is trained by a subprocess (``python -m <TRAIN_MODULE> --run-dir DIR``, or ``accelerate
launch``) that follows the run-directory contract of :mod:`raftweb.train`. This module claims the
run, starts the process (stdout and stderr into ``log.txt``), and watches it: it tails
``metrics.jsonl`` into :class:`TrainingMetric` rows (idempotent by line number), reports progress
and a heartbeat, forwards a cancel as the ``CANCEL`` file, and on the script's done event records
the result and the :class:`ModelVersion` built from ``artifact/`` (an embedding version is also
indexed beside the base one and measured with the product's own retrieval evaluation).

A worker that dies leaves its run "running" with an old heartbeat; the periodic
``training_runs_resume_stale`` task claims it again: the training process, if it is still alive
on this host, is adopted and watched; otherwise it is started again and resumes from its newest
checkpoint (the script's job). A worker told to stop hands its run back at once and leaves the
process running for the next worker to adopt. It never enqueues.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from corpus.knowledge.indexes import CorpusError
from corpus.knowledge.search import kb_retrieval_evaluate
from corpus.knowledge.services import kb_embedding_add
from corpus.models import BASE_VERSION, KnowledgeBase
from raftweb.errors import RaftwebError
from raftweb.shutdown import StopGate
from training.activation import active_model_set
from training.models import MergeStatus, ModelKind, ModelVersion, TrainingMetric, TrainingRun
from training.selectors import eval_retrieval_questions, run_log_tail, stale_q

log = logging.getLogger(__name__)

HOST = socket.gethostname()
CANCEL_FILE = "CANCEL"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
# After its done event the script should exit at once; this long is waited before it is stopped.
EXIT_AFTER_DONE_S = 60.0
TERMINATE_GRACE_S = 10.0
FINISH_LEASE_S = 30 * 60
ERROR_LOG_CHARS = 2000
RETRIEVAL_K = (1, 5, 10)
# metrics.jsonl is read at most this much per poll (a worker adopting a long run catches up
# over a few polls).
TAIL_READ_BYTES = 8 * 1024 * 1024

# Set when this worker process is shutting down (SIGTERM to `run_huey`; see training.tasks):
# each watch hands its run back at once and leaves the training process running.
_gate = StopGate()


def training_runs_stop(*, timeout: float = 5.0) -> bool:
    """Ask every watch in this process to hand its run back; wait at most ``timeout`` s."""
    return _gate.stop(timeout=timeout)


# Test hook: called after every poll of a watch (a test raises here to simulate a worker that
# is killed while its training process runs on).
after_poll: Callable[[TrainingRun], None] | None = None


# --------------------------------------------------------------------------- the command


def training_command(run_dir: Path) -> list[str]:
    """The training process for ``run_dir``, per RAFTWEB_TRAIN_LAUNCHER."""
    module = settings.TRAIN_MODULE
    if settings.TRAIN_LAUNCHER == "accelerate":
        extra = shlex.split(settings.TRAIN_ACCELERATE_ARGS or "")
        launcher = [sys.executable, "-m", "accelerate.commands.launch", *extra, "-m", module]
        return [*launcher, "--run-dir", str(run_dir)]
    return [sys.executable, "-m", module, "--run-dir", str(run_dir)]


def _training_env() -> dict[str, str]:
    env = dict(os.environ)
    # The module is found from the project root whatever directory the process runs in.
    root = str(settings.BASE_DIR)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # log.txt follows the script live
    return env


# --------------------------------------------------------------------------- claim


def training_run_claim(*, run_id: int) -> str | None:
    """Take a run for this worker with one conditional update that must change exactly one row;
    returns the claim token, or None when the run is not this worker's to run.

    Claimable: a queued run of a KB with no other run in progress (runs of one KB train one
    after the other), or a running run whose worker went silent (stale heartbeat). Two
    workers racing for one run - the original and a stale-run resume, or a run enqueued twice -
    both try; exactly one gets it."""
    token = uuid.uuid4().hex
    now = timezone.now()
    with transaction.atomic():
        kb_id = TrainingRun.objects.filter(pk=run_id).values_list("kb_id", flat=True).first()
        if kb_id is None:
            return None
        # Claims of one KB's runs wait for each other here (a row lock on PostgreSQL; SQLite
        # write transactions are serial already), so two runs of one KB never both start.
        list(KnowledgeBase.objects.select_for_update().filter(pk=kb_id).values_list("pk"))
        busy = TrainingRun.objects.filter(kb_id=kb_id, status=TrainingRun.Status.RUNNING).exclude(
            pk=run_id
        )
        claimed = (
            TrainingRun.objects.filter(pk=run_id)
            .filter(Q(status=TrainingRun.Status.QUEUED) | stale_q())
            .filter(~Exists(busy))
            .update(
                status=TrainingRun.Status.RUNNING,
                claim_token=token,
                heartbeat_at=now,
                started_at=Coalesce("started_at", Value(now)),
            )
        )
    return token if claimed == 1 else None


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Run (or resume, or adopt) a run to its end. Safe to call again after any interruption
    and from two workers at once: only the one that claims the run watches it. A run that
    cannot be claimed (another run of its KB is in progress) stays queued."""
    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None or run.status in TrainingRun.FINISHED:
        return run
    token = training_run_claim(run_id=run.pk)
    if token is None:
        log.info("training run %s is not claimable now (running elsewhere, or waiting)", run.pk)
        run.refresh_from_db()
        return run
    with _gate.tracked():
        return _Watch(run_id=run.pk, token=token).watch()


# --------------------------------------------------------------------------- metrics


@dataclass
class TailResult:
    lines: int  # new complete lines read
    done: dict[str, Any] | None  # the done event, if one was among them
    steps: list[dict[str, Any]] = field(default_factory=list)  # the step events among them


def training_run_tail(*, run: TrainingRun, token: str | None = None) -> TailResult:
    """Read the complete lines of metrics.jsonl past the run's offset into TrainingMetric rows
    and update the run's progress. Idempotent: a line is stored once (unique by line number),
    whoever reads it and however often; a half-written last line waits for the next read."""
    path = Path(run.run_dir) / METRICS_FILE
    offset, first_line = run.metrics_offset, run.metrics_lines
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(TAIL_READ_BYTES)
            if len(data) == TAIL_READ_BYTES and b"\n" not in data:
                data += fh.readline()  # one line longer than a whole read: take it whole
    except FileNotFoundError:
        return TailResult(0, None)
    end = data.rfind(b"\n")
    if end < 0:
        return TailResult(0, None)
    raw_lines = data[: end + 1].split(b"\n")[:-1]
    rows: list[TrainingMetric] = []
    done: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = []
    for i, raw in enumerate(raw_lines):
        event = _parse_line(raw)
        if event is None:
            log.warning("training run %s: metrics line %s is not a JSON object", run.pk, i)
            continue
        kind = str(event.get("event") or "unknown")[:32]
        step = event.get("step")
        rows.append(
            TrainingMetric(
                run=run,
                line=first_line + i,
                event=kind,
                step=step if isinstance(step, int) and step >= 0 else None,
                values=event,
            )
        )
        if kind == "step":
            steps.append(event)
        elif kind == "done":
            done = event
    changes: dict[str, Any] = {
        "metrics_offset": offset + end + 1,
        "metrics_lines": first_line + len(raw_lines),
    }
    if steps:
        changes.update(_progress(run, steps[-1]))
    if done is not None:
        changes["done_event"] = done
    owner = Q(pk=run.pk, metrics_offset=offset)
    if token is not None:
        owner &= Q(claim_token=token)
        changes["heartbeat_at"] = timezone.now()
    with transaction.atomic():
        TrainingMetric.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        advanced = TrainingRun.objects.filter(owner).update(**changes)
    if advanced:
        for name, value in changes.items():
            setattr(run, name, value)
    if not advanced:
        return TailResult(0, None)
    return TailResult(len(raw_lines), done, steps)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _progress(run: TrainingRun, event: dict[str, Any]) -> dict[str, Any]:
    step = _int(event.get("step"), run.step)
    total = _int(event.get("total_steps"), run.total_steps)
    out: dict[str, Any] = {"step": step, "total_steps": total}
    if total > 0:
        out["progress"] = min(1.0, step / total)
    return out


def _ts(event: dict[str, Any], default: float) -> float:
    ts = event.get("ts")
    return float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else default


def _int(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _close_partial_line(path: Path) -> None:
    """A process killed mid-write leaves half a line; end it, so the next attempt's first event
    starts a line of its own (the broken line is skipped when read)."""
    try:
        with path.open("rb+") as fh:
            fh.seek(0, 2)
            if fh.tell() == 0:
                return
            fh.seek(-1, 2)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    except FileNotFoundError:
        return


# --------------------------------------------------------------------------- processes


class _Process:
    """The training process of a watch: started here, or adopted from a dead worker."""

    pid: int

    def poll(self) -> int | None:
        """None while it runs; then its exit status (-1 when unknown: an adopted process)."""
        raise NotImplementedError

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while (rc := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return rc

    def stop(self) -> None:
        """SIGTERM to its process group (accelerate's workers too), then SIGKILL."""
        if self.poll() is not None:
            return
        _signal_group(self.pid, signal.SIGTERM)
        if self.wait(TERMINATE_GRACE_S) is None:
            _signal_group(self.pid, signal.SIGKILL)
            self.wait(TERMINATE_GRACE_S)


class _Child(_Process):
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()


class _Adopted(_Process):
    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.pid = proc.pid

    def poll(self) -> int | None:
        try:
            if self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            pass
        return -1


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _find_process(run: TrainingRun) -> _Adopted | None:
    """The run's training process if it still runs on this host (its worker died, not it)."""
    if not run.pid or run.worker_host != HOST:
        return None
    try:
        proc = psutil.Process(run.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    # A recycled pid is some other program: the run's process names its run directory.
    if "--run-dir" not in cmdline or run.run_dir not in cmdline:
        return None
    return _Adopted(proc)


# --------------------------------------------------------------------------- the watch


class _LostClaim(Exception):
    """Another worker took the run over (this one was taken for dead)."""


class _Watch:
    """One worker's watch over one claimed run, from claim to a final status."""

    def __init__(self, *, run_id: int, token: str) -> None:
        self.run = TrainingRun.objects.select_related("kb").get(pk=run_id)
        self.token = token
        self.run_dir = Path(self.run.run_dir)
        self.proc: _Process | None = None
        self.cancel_since: float | None = None
        # ETA from this attempt's own pace: (time, step) of its first step event.
        self.pace_start: tuple[float, int] | None = None

    # -- the loop -------------------------------------------------------------------------

    def watch(self) -> TrainingRun:
        try:
            return self._watch()
        except _LostClaim:
            log.warning("training run %s was taken over by another worker", self.run.pk)
            self.run.refresh_from_db()
            return self.run

    def _watch(self) -> TrainingRun:
        if not self.run.run_dir or not self.run_dir.is_dir():
            return self._fail(f"run directory {self.run.run_dir or '(none)'} disappeared")
        # Lines the last attempt wrote while no worker watched (the done event, even).
        self._tail()
        adopted = _find_process(self.run)
        if self.run.done_event is not None:
            if adopted is not None:
                adopted.wait(EXIT_AFTER_DONE_S)
            return self._finish_done(self.run.done_event)
        if adopted is not None:
            log.info("training run %s: adopting its running process %s", self.run.pk, adopted.pid)
            self.proc = adopted
        elif self._cancel_requested():
            return self._finish(TrainingRun.Status.CANCELLED)
        else:
            self.proc = self._launch()
            if self.proc is None:
                return self.run
        poll_s = float(settings.TRAIN_POLL_S)
        while True:
            if _gate.stopping:
                return self._hand_back()
            if not self.run_dir.is_dir():
                self.proc.stop()
                return self._fail(f"run directory {self.run.run_dir} disappeared")
            result = self._tail()
            if result.done is not None:
                self.proc.wait(EXIT_AFTER_DONE_S)
                self.proc.stop()
                return self._finish_done(result.done)
            rc = self.proc.poll()
            if rc is not None:
                result = self._tail()  # what it wrote just before it exited
                if result.done is not None:
                    return self._finish_done(result.done)
                return self._finish_exit(rc)
            self._heartbeat()
            self._check_cancel()
            if after_poll is not None:
                after_poll(self.run)
            time.sleep(poll_s)

    def _launch(self) -> _Process | None:
        _close_partial_line(self.run_dir / METRICS_FILE)
        command = training_command(self.run_dir)
        attempt = self.run.attempts + 1
        try:
            with (self.run_dir / LOG_FILE).open("ab") as log_file:
                stamp = timezone.now().isoformat(timespec="seconds")
                log_file.write(f"\n=== {stamp} attempt {attempt}: {shlex.join(command)}\n".encode())
                log_file.flush()
                popen = subprocess.Popen(
                    command,
                    cwd=self.run_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=_training_env(),
                    # Its own process group: a Ctrl-C meant for the worker does not reach it, and
                    # a stop reaches all of accelerate's workers.
                    start_new_session=True,
                )
        except OSError as exc:
            self._fail(f"cannot start the training process ({shlex.join(command)}): {exc}")
            return None
        self._update(pid=popen.pid, worker_host=HOST, attempts=F("attempts") + 1)
        self.run.attempts = attempt
        log.info("training run %s: attempt %s started (pid %s)", self.run.pk, attempt, popen.pid)
        return _Child(popen)

    def _tail(self) -> TailResult:
        result = training_run_tail(run=self.run, token=self.token)
        if result.steps and self.run.total_steps:
            self._eta(result.steps)
        return result

    def _eta(self, steps: list[dict[str, Any]]) -> None:
        """Remaining steps at this attempt's own pace, timed by the events' ``ts`` (when the
        script wrote them) or else by when they were read."""
        now = time.time()
        points = [(_ts(e, now), _int(e.get("step"), 0)) for e in steps]
        if self.pace_start is None or points[0][1] < self.pace_start[1]:
            self.pace_start = points[0]  # a resumed attempt starts its own pace
        (t0, s0), (t, step) = self.pace_start, points[-1]
        if step > s0 and t > t0:
            eta = (t - t0) / (step - s0) * max(0, self.run.total_steps - step)
            self._update(eta_seconds=round(eta, 1))
            self.run.eta_seconds = round(eta, 1)

    def _heartbeat(self) -> None:
        self._update(heartbeat_at=timezone.now())

    def _cancel_requested(self) -> bool:
        flag = TrainingRun.objects.filter(pk=self.run.pk).values_list("cancel_requested", flat=True)
        requested = bool(flag.first()) or (self.run_dir / CANCEL_FILE).exists()
        self.run.cancel_requested = requested
        return requested

    def _check_cancel(self) -> None:
        if not self._cancel_requested():
            return
        # The file asks the script to stop after its current step; the flag says why it ended.
        try:
            (self.run_dir / CANCEL_FILE).touch()
        except OSError:
            pass  # the directory is gone: the next poll fails the run
        self._update(cancel_requested=True)
        if self.cancel_since is None:
            self.cancel_since = time.monotonic()
        elif time.monotonic() - self.cancel_since > settings.TRAIN_CANCEL_GRACE_S:
            log.warning("training run %s ignored CANCEL; stopping it", self.run.pk)
            assert self.proc is not None
            self.proc.stop()

    def _update(self, **changes: Any) -> None:
        """Write to the run while this worker still holds it."""
        if not TrainingRun.objects.filter(pk=self.run.pk, claim_token=self.token).update(**changes):
            raise _LostClaim()

    # -- endings ----------------------------------------------------------------------------

    def _hand_back(self) -> TrainingRun:
        """This worker is stopping: leave the process running and the run claimable at once
        (no heartbeat reads as "its worker is gone"), for the next worker to adopt."""
        self._update(heartbeat_at=None)
        log.info("training run %s handed back; its process keeps running", self.run.pk)
        self.run.refresh_from_db()
        return self.run

    def _finish_exit(self, rc: int) -> TrainingRun:
        if self._cancel_requested():
            return self._finish(TrainingRun.Status.CANCELLED)
        tail = run_log_tail(self.run, chars=ERROR_LOG_CHARS).strip()
        if rc == 0:
            why = "the training process exited without reporting a result (no done event)"
        elif rc == -1:
            why = "the training process (adopted after a worker restart) ended without a done event"
        elif rc < 0:
            why = f"the training process was killed by signal {-rc} before it finished"
        else:
            why = f"the training process failed with exit code {rc}"
        return self._fail(f"{why}; the end of log.txt:\n{tail}" if tail else why)

    def _finish_done(self, done: dict[str, Any]) -> TrainingRun:
        status = done.get("status")
        metrics = done.get("metrics") if isinstance(done.get("metrics"), dict) else {}
        if status != "succeeded":
            if status == "cancelled" or self._cancel_requested():
                return self._finish(TrainingRun.Status.CANCELLED, metrics=metrics)
            error = str(done.get("error") or "the training script reported a failure")
            return self._fail(error, metrics=metrics)
        artifact = self.run_dir / "artifact"
        if not artifact.is_dir():
            return self._fail(f"the script reported success, but {artifact} is missing")
        # Indexing a tuned embedding model can take a while with no poll in between: a
        # heartbeat ahead of time keeps the run from being taken for dead meanwhile (if this
        # worker dies here, the run is resumed once the lease has run out).
        self._update(heartbeat_at=timezone.now() + timedelta(seconds=FINISH_LEASE_S))
        version = _version_from_artifact(self.run, artifact, metrics)
        notes: list[str] = []
        if self.run.kind == ModelKind.EMBEDDING:
            metrics = {**metrics, **_embedding_register(self.run, version, notes)}
            ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
        if self.run.activate_on_success:
            try:
                active_model_set(version=version)
            except RaftwebError as exc:
                notes.append(f"not activated: {exc.message}")
        return self._finish(TrainingRun.Status.SUCCEEDED, metrics=metrics, notes=notes)

    def _fail(self, error: str, *, metrics: dict[str, Any] | None = None) -> TrainingRun:
        log.warning("training run %s failed: %s", self.run.pk, error.splitlines()[0])
        return self._finish(TrainingRun.Status.FAILED, error=error, metrics=metrics)

    def _finish(
        self,
        status: str,
        *,
        error: str = "",
        metrics: dict[str, Any] | None = None,
        notes: list[str] | None = None,
    ) -> TrainingRun:
        changes: dict[str, Any] = {
            "status": status,
            "error": error,
            "finished_at": timezone.now(),
            "pid": None,
            "eta_seconds": None,
        }
        if metrics is not None:
            changes["metrics"] = metrics
        if notes:
            changes["notes"] = list(dict.fromkeys([*(self.run.notes or []), *notes]))
        if status == TrainingRun.Status.SUCCEEDED:
            changes["progress"] = 1.0
        self._update(**changes)
        self.run.refresh_from_db()
        return self.run


# --------------------------------------------------------------------------- results


def _base_model(config: dict[str, Any]) -> str:
    for key in ("base_model", "model", "model_name_or_path"):
        value = config.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _version_from_artifact(
    run: TrainingRun, artifact: Path, metrics: dict[str, Any]
) -> ModelVersion:
    """The run's model version (created once, whoever finishes the run)."""
    adapter_config = artifact / "adapter_config.json"
    base = _base_model(run.config)
    if adapter_config.is_file():
        try:
            base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") or base
        except (OSError, ValueError):
            pass
    version, _ = ModelVersion.objects.update_or_create(
        run=run,
        defaults={
            "kb": run.kb,
            "kind": run.kind,
            "label": f"{run.kind}-run-{run.pk}",
            "base_model": base,
            "path": str(artifact),
            "is_adapter": adapter_config.is_file(),
            "dataset_hash": run.data_hash,
            "metrics": metrics,
            "embedding_version": f"run-{run.pk}" if run.kind == ModelKind.EMBEDDING else "",
        },
    )
    return version


def _embedding_register(
    run: TrainingRun, version: ModelVersion, notes: list[str]
) -> dict[str, Any]:
    """Index every chunk with the tuned model (a new embedding version beside the base one, not
    activated) and measure retrieval on the eval split, base against tuned."""
    kb = run.kb
    try:
        kb_embedding_add(
            kb=kb, version=version.embedding_version, model=version.path, activate=False
        )
    except CorpusError as exc:
        notes.append(f"indexing with the tuned model failed ({exc.message}); activating retries it")
        return {}
    questions = eval_retrieval_questions(kb)
    if not questions:
        notes.append("no approved eval-split questions: retrieval was not measured")
        return {}
    out: dict[str, Any] = {"retrieval_questions": len(questions)}
    try:
        for mode in ("dense", "hybrid"):
            for name, emb_version in (("base", BASE_VERSION), ("tuned", version.embedding_version)):
                result = kb_retrieval_evaluate(
                    kb=kb,
                    questions=questions,
                    mode=mode,
                    k_values=RETRIEVAL_K,
                    embedding_version=emb_version,
                )
                for key in (*(f"recall@{k}" for k in RETRIEVAL_K), "mrr"):
                    out[f"{mode}_{key}_{name}"] = result[key]
    except CorpusError as exc:
        notes.append(f"retrieval evaluation failed: {exc.message}")
    return out


# --------------------------------------------------------------------------- versions


def embedding_version_activate_run(*, version_id: int) -> ModelVersion | None:
    """(Re)build an embedding version's index, then make it the KB's active one."""
    version = ModelVersion.objects.select_related("kb").filter(pk=version_id).first()
    if version is None or version.kind != ModelKind.EMBEDDING:
        return version
    label = version.embedding_version or f"version-{version.pk}"
    try:
        kb_embedding_add(kb=version.kb, version=label, model=version.path, activate=False)
    except CorpusError as exc:
        log.warning("embedding version %s: indexing failed: %s", version.pk, exc.message)
        return version
    if label != version.embedding_version:
        ModelVersion.objects.filter(pk=version.pk).update(embedding_version=label)
        version.embedding_version = label
    version.kb.refresh_from_db()
    return active_model_set(version=version)


def model_version_merge_run(*, version_id: int) -> ModelVersion | None:
    """Merge a generator adapter into its base model and save the result beside the adapter
    (``merged/``): one self-contained model for servers without LoRA support."""
    claimed = ModelVersion.objects.filter(pk=version_id, merge_status=MergeStatus.QUEUED).update(
        merge_status=MergeStatus.RUNNING, merge_error=""
    )
    version = ModelVersion.objects.filter(pk=version_id).first()
    if not claimed or version is None:
        return version
    adapter = Path(version.path)
    out = adapter.parent / "merged"
    tmp = adapter.parent / "merged.tmp"
    try:
        _merge(adapter, version.base_model, tmp)
        if out.exists():
            _rmtree(out)
        tmp.rename(out)
    except Exception as exc:  # noqa: BLE001 - any failure of the model stack is the merge's
        log.exception("merging version %s failed", version_id)
        _rmtree(tmp)
        ModelVersion.objects.filter(pk=version_id).update(
            merge_status=MergeStatus.FAILED, merge_error=f"{type(exc).__name__}: {exc}"[:2000]
        )
    else:
        ModelVersion.objects.filter(pk=version_id).update(
            merge_status=MergeStatus.DONE, merged_path=str(out)
        )
    version.refresh_from_db()
    return version


def _merge(adapter: Path, base_model: str, out: Path) -> None:
    # The model stack is imported here, in the worker, when a merge runs: not by every
    # process that imports the training app.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not base_model:
        raise ValueError("the version does not name its base model")
    _rmtree(out)
    base = AutoModelForCausalLM.from_pretrained(base_model, torch_dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out))
    has_tokenizer = any((adapter / n).exists() for n in ("tokenizer.json", "tokenizer_config.json"))
    AutoTokenizer.from_pretrained(str(adapter) if has_tokenizer else base_model).save_pretrained(
        str(out)
    )


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
