"""The run-directory contract both training scripts share (see :mod:`raftweb.train`): file
names, exit codes, the metrics event log, checkpoints, and agreement between the processes of
a multi-GPU launch. One place, so the generator and embedding scripts cannot drift apart."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raftweb.errors import Invalid

# Exit codes of a run; the done event says the same in words.
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 3

CANCEL_FILE = "CANCEL"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
ARTIFACT_DIR = "artifact"
ARTIFACT_TMP_DIR = "artifact.tmp"
# Two checkpoints: the newest, and the one before it in case the newest was cut short.
CHECKPOINTS_KEPT = 2


def world() -> tuple[int, int, int]:
    """(rank, local rank, world size) as ``accelerate launch`` / torchrun set them."""
    env = os.environ
    return (
        int(env.get("RANK", 0) or 0),
        int(env.get("LOCAL_RANK", 0) or 0),
        int(env.get("WORLD_SIZE", 1) or 1),
    )


def is_main_process() -> bool:
    """True in a plain run and in the rank-0 process of ``accelerate launch``."""
    return world()[0] == 0


class Events:
    """Appends contract events to metrics.jsonl, one flushed line each (main process only)."""

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        if enabled:
            _end_partial_line(path)

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, **fields, "ts": round(time.time(), 3)}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()

    def step(self, state: Any, logs: dict[str, Any], *, tokens_per_s: float, **extra: Any) -> None:
        """The "step" event both scripts write from a trainer's training log (the fields the
        worker tails into the run's loss curve)."""
        self.write(
            "step",
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=round(float(state.epoch or 0.0), 4),
            loss=number(logs.get("loss")),
            learning_rate=number(logs.get("learning_rate")),
            grad_norm=number(logs.get("grad_norm")),
            tokens_per_s=round(tokens_per_s, 1),
            **extra,
        )


def _end_partial_line(path: Path) -> None:
    """A process killed mid-write leaves half a line; end it so the next event is whole."""
    try:
        with path.open("rb+") as fh:
            if fh.seek(0, 2) == 0:
                return
            fh.seek(-1, 2)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    except FileNotFoundError:
        return


def iter_events(run_dir: Path) -> Iterator[dict[str, Any]]:
    """The events in metrics.jsonl (broken lines skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` the trainer finished writing, or None. The trainer writes
    ``trainer_state.json`` last, so a checkpoint whose state file is missing or unreadable was cut
    short by a kill and is skipped."""
    if not checkpoints.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for path in checkpoints.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        state = path / "trainer_state.json"
        if not (path.is_dir() and suffix.isdigit() and state.is_file()):
            continue
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append((int(suffix), path))
    return max(found)[1] if found else None


def number(value: Any) -> float | None:
    """A finite float for a metrics field, or None (JSON has no NaN)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def agree(*flags: bool) -> tuple[bool, ...]:
    """With several processes, a flag set in any is set in all: the processes must stop and
    save at the same step (one that stopped alone would leave the others waiting forever)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return flags
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flags
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    tensor = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(bool(v > 0) for v in tensor.tolist())


# ------------------------------------------------------------------------------ failures


def _kept(run_dir: Path) -> str:
    checkpoint = latest_checkpoint(run_dir / CHECKPOINTS_DIR)
    if checkpoint is None:
        return "no checkpoint was written yet"
    return f"{checkpoint.name} is kept; a re-run resumes from it"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def out_of_memory_message(run_dir: Path, exc: BaseException) -> str:
    return (
        f"out of memory ({_first_line(exc)}). Lower batch_size (raise gradient_accumulation to "
        f"keep the effective batch) or max_seq_length, turn gradient_checkpointing on, or use "
        f"method qlora. {_kept(run_dir)}."
    )


def disk_full_message(run_dir: Path, exc: OSError) -> str:
    return (
        f"the disk is full ({exc.strerror or _first_line(exc)}) while writing under {run_dir}; "
        f"nothing half-written was kept. Free space there (old runs' checkpoints, "
        f"RAFTWEB_DATA_DIR) and resume the run. {_kept(run_dir)}."
    )


def failure_message(run_dir: Path, exc: BaseException) -> str:
    """What a failed run's done event says: the cause in words a user can act on."""
    try:
        import torch

        oom: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)
    except ImportError:  # pragma: no cover - torch is a dependency
        oom = (MemoryError,)
    if isinstance(exc, oom):
        return out_of_memory_message(run_dir, exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full_message(run_dir, exc)
    if isinstance(exc, Invalid):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def removed_on_failure(path: Path) -> Iterator[None]:
    """Remove ``path`` (an artifact being written) when the block fails: a full disk must not
    keep a half-written model, and the space it took is needed for the retry."""
    try:
        yield
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
