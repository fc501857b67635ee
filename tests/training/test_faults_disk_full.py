"""Fault: the disk fills up while a training run's directory (its config and data files, the
run's first artifact) is being written. The write call fails with ``OSError(ENOSPC)``; the run
is not created (no row, no folder), the runs before it are untouched, and the API answers 507
``storage_full`` instead of an internal error."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from training.models import TrainingRun
from training.services import training_run_start

pytestmark = pytest.mark.django_db


class FullDisk:
    """A file whose device fills up after ``room`` characters."""

    def __init__(self, real: Any, room: int) -> None:
        self.real, self.room, self.written = real, room, 0

    def write(self, data: str) -> int:
        if self.written + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.real.write(data)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_full_disk_while_writing_a_run_leaves_no_run_and_the_others_intact(
    tv_kb: Any, alice: Any, api_token_for: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    runs_dir = Path(settings.TRAIN_RUNS_DIR)
    before = _tree(runs_dir)
    real_open = Path.open

    def tight_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        return FullDisk(handle, room=200) if self.name == "train.jsonl" and "w" in mode else handle

    monkeypatch.setattr(Path, "open", tight_open)
    response = Client().post(
        "/api/kbs/tv/training-runs",
        {"kind": "generator"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_token_for(alice)}"},
    )
    monkeypatch.undo()

    assert response.status_code == 507, response.content
    error = response.json()["error"]
    assert error["code"] == "storage_full" and "disk is full" in error["message"]
    assert list(TrainingRun.objects.values_list("pk", flat=True)) == [earlier.pk]
    assert _tree(runs_dir) == before  # the earlier run's files, and nothing else
    # With room again, the run is created as usual.
    again = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    assert (Path(again.run_dir) / "data" / "train.jsonl").stat().st_size > 0
