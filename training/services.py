"""Training services (request side): start, cancel and resume runs; activate and merge model
versions. They validate, write the run directory and enqueue; the worker runs
:mod:`training.runner`, which starts the training script as a subprocess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from corpus.dataset.io import qa_rows
from corpus.models import Chunk, Document, KnowledgeBase, QAPair
from raftweb.core.audit import audit
from raftweb.errors import Conflict, Invalid, RaftwebError, StorageFull, disk_full
from raftweb.raft.formats import RaftRow
from raftweb.train.config import resolve_config as _engine_resolve_config
from training.activation import active_model_set, promotion_check
from training.models import MergeStatus, ModelKind, ModelVersion, TrainingRun
from training.runner import CANCEL_FILE
from training.selectors import run_is_stale, version_index_status
from training.tasks import (
    embedding_version_activate_task,
    model_version_merge_task,
    training_run_task,
)

log = logging.getLogger(__name__)

KINDS = tuple(ModelKind.values)
METHODS = ("lora", "qlora", "full")
# The share of a generator run's approved train rows held out for its eval loss (RAFT rows
# of documents the evaluation matrix never sees stay in the eval split, untouched).
GENERATOR_EVAL_SHARE = 0.1


# ------------------------------------------------------------------------------ config


def training_config_resolve(
    *,
    kind: str,
    preset: str | None = None,
    method: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The typed config of ``kind`` with ``preset`` and ``overrides`` applied, validated by the
    engine (:func:`raftweb.train.config.resolve_config`), as the dict written to config.json.

    This is the one place the request side calls the engine's config code."""
    values = dict(overrides or {})
    if method:
        values["method"] = method
    try:
        resolved = _engine_resolve_config(kind, preset, values)
    except RaftwebError:
        raise
    except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
        raise Invalid(f"invalid training config: {exc}", status=422) from None
    config: dict[str, Any] = _as_dict(resolved)
    config["kind"] = kind
    return config


# Friendly options (CLI flags, form fields) and the config keys they may be called by: the
# first key the engine's config of that kind has is used.
OPTION_KEYS: dict[str, tuple[str, ...]] = {
    "base_model": ("base_model", "model_name_or_path", "model"),
    "epochs": ("epochs", "num_train_epochs"),
    "learning_rate": ("learning_rate", "lr"),
}


def training_overrides(*, kind: str, preset: str | None = None, **options: Any) -> dict[str, Any]:
    """Config overrides from friendly options (``base_model``, ``epochs``, ``learning_rate``),
    named as the engine's config of ``kind`` names them; options left as None are skipped."""
    given = {k: v for k, v in options.items() if v is not None and v != ""}
    if isinstance(given.get("epochs"), float) and given["epochs"].is_integer():
        given["epochs"] = int(given["epochs"])  # "2" epochs, not "2.0"
    if not given:
        return {}
    unknown = sorted(set(given) - set(OPTION_KEYS))
    if unknown:
        raise Invalid(f"unknown training option(s): {', '.join(unknown)}")
    keys = set(training_config_resolve(kind=kind, preset=preset))
    out = {}
    for option, value in given.items():
        names = OPTION_KEYS[option]
        out[next((n for n in names if n in keys), names[0])] = value
    return out


def _as_dict(resolved: Any) -> dict[str, Any]:
    if hasattr(resolved, "to_dict"):
        return dict(resolved.to_dict())
    if dataclasses.is_dataclass(resolved) and not isinstance(resolved, type):
        return dataclasses.asdict(resolved)
    return dict(resolved)


# ------------------------------------------------------------------------------ runs


def training_run_start(
    *,
    kb: KnowledgeBase,
    kind: str,
    method: str | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    user: Any = None,
    activate: bool = False,
    enqueue: bool = True,
) -> TrainingRun:
    """Validate the config, write the run directory (config.json and the data files) and queue
    the run. Runs of one KB are trained one after the other: this one waits while another runs.
    ``activate``: the version it produces becomes the KB's active one when it succeeds.
    """
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}", status=422)
    if method is not None and method not in METHODS:
        raise Invalid(f"method must be one of {', '.join(METHODS)}", status=422)
    train_rows = list(qa_rows(kb=kb, split="train"))
    if not train_rows:
        raise Invalid(
            f"No approved training rows in {kb.slug}: review some pairs first", code="no_rows"
        )
    config = training_config_resolve(kind=kind, preset=preset, method=method, overrides=overrides)
    eval_rows = list(qa_rows(kb=kb, split="eval")) if kind == ModelKind.EMBEDDING else []
    with transaction.atomic():
        run = TrainingRun.objects.create(
            kb=kb,
            kind=kind,
            method=str(config.get("method") or method or ""),
            preset=str(preset or config.get("preset") or ""),
            config=config,
            activate_on_success=activate,
            created_by=user if getattr(user, "pk", None) else None,
        )
        run_dir = Path(settings.TRAIN_RUNS_DIR) / str(run.pk)
        try:
            counts = _write_run_dir(
                run_dir, kb=kb, config=config, train=train_rows, evals=eval_rows
            )
        except BaseException as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            if disk_full(exc):  # the run's row goes with the transaction: nothing half-made
                raise StorageFull(
                    "The server's disk is full: the training run was not created. Free some "
                    "space and start it again."
                ) from exc
            raise
        TrainingRun.objects.filter(pk=run.pk).update(run_dir=str(run_dir), **counts)
        audit(user, "training.start", run, kind=kind, preset=run.preset, method=run.method)
        if enqueue:
            transaction.on_commit(lambda: training_run_task(run.pk))
    run.refresh_from_db()
    return run


def _write_run_dir(
    run_dir: Path,
    *,
    kb: KnowledgeBase,
    config: dict[str, Any],
    train: list[RaftRow],
    evals: list[RaftRow],
) -> dict[str, Any]:
    """Write config.json and data/; returns the run's counts and data hash."""
    if run_dir.exists():
        # Left by a run whose creation was rolled back (its id is free again): nothing in the
        # database points at it.
        shutil.rmtree(run_dir)
    data = run_dir / "data"
    data.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    feedback_ids = {
        f"{kb.slug}-{pk}"
        for pk in QAPair.objects.filter(
            kb=kb, status=QAPair.Status.APPROVED, source=QAPair.Source.CHAT_FEEDBACK
        ).values_list("pk", flat=True)
    }
    if config["kind"] == ModelKind.GENERATOR:
        train_part, eval_part = _hold_out(train, GENERATOR_EVAL_SHARE)
        train_lines = [_raft_line(r) for r in train_part]
        eval_lines = [_raft_line(r) for r in eval_part]
        used = train
    else:
        pairs = [(r, _embedding_record(r)) for r in train]
        used = [r for r, rec in pairs if rec is not None]
        if not used:
            raise Invalid(
                f"No approved training rows in {kb.slug} have an oracle passage to learn from: "
                "review some pairs first",
                code="no_rows",
            )
        train_lines = [json.dumps(rec, ensure_ascii=False) for _, rec in pairs if rec is not None]
        eval_lines = [
            json.dumps(rec, ensure_ascii=False)
            for rec in (_embedding_record(r) for r in evals)
            if rec is not None
        ]
        _write_lines(data / "corpus.jsonl", _corpus_lines(kb))
    _write_lines(data / "train.jsonl", train_lines)
    _write_lines(data / "eval.jsonl", eval_lines)
    return {
        "rows_train": len(train_lines),
        "rows_eval": len(eval_lines),
        "rows_from_feedback": sum(1 for r in used if r.id in feedback_ids),
        "data_hash": _data_hash(data),
    }


def _hold_out(rows: list[RaftRow], share: float) -> tuple[list[RaftRow], list[RaftRow]]:
    """A stable split: the same rows are held out whatever order they come in."""
    n_eval = int(len(rows) * share)
    if n_eval == 0:
        return rows, []
    ranked = sorted(rows, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
    held = {r.id for r in ranked[:n_eval]}
    return [r for r in rows if r.id not in held], [r for r in rows if r.id in held]


def _raft_line(row: RaftRow) -> str:
    return json.dumps(dataclasses.asdict(row), ensure_ascii=False)


def _embedding_record(row: RaftRow) -> dict[str, Any] | None:
    """``{"query", "positive", "negatives"}``: the oracle passage against the distractors."""
    positive = row.oracle_text
    if not positive and row.oracle_index is not None and row.oracle_index < len(row.context_texts):
        positive = row.context_texts[row.oracle_index]
    if not positive or not row.question.strip():
        return None
    negatives = [
        text
        for i, text in enumerate(row.context_texts)
        if i != row.oracle_index and text and text != positive
    ]
    return {"query": row.question, "positive": positive, "negatives": negatives}


def _corpus_lines(kb: KnowledgeBase) -> Iterable[str]:
    chunks = (
        Chunk.objects.filter(document__kb=kb, document__status=Document.Status.READY)
        .order_by("document_id", "ordinal")
        .values_list("pk", "text")
    )
    for pk, text in chunks.iterator(chunk_size=1000):
        yield json.dumps({"id": str(pk), "text": text}, ensure_ascii=False)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")


def _data_hash(data_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(data_dir.glob("*.jsonl")):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run is cancelled at once; a running one is asked to stop (the CANCEL file) and
    ends as cancelled once its script has stopped."""
    if not run.is_active:
        raise Conflict(f"training run {run.pk} is already {run.status}", code="not_active")
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    if run.status == TrainingRun.Status.RUNNING and run.run_dir and Path(run.run_dir).is_dir():
        (Path(run.run_dir) / CANCEL_FILE).touch()
    audit(None, "training.cancel", run)
    return run


def training_run_resume(*, run: TrainingRun, enqueue: bool = True) -> TrainingRun:
    """Queue a failed, cancelled or abandoned run again: its script resumes from its newest
    checkpoint."""
    if run.status == TrainingRun.Status.SUCCEEDED:
        raise Conflict(f"training run {run.pk} already succeeded", code="succeeded")
    if run.status == TrainingRun.Status.RUNNING and not run_is_stale(run):
        raise Conflict(f"training run {run.pk} is still running", code="running")
    run_dir = Path(run.run_dir)
    if not run.run_dir or not run_dir.is_dir():
        raise Conflict(
            f"run directory {run.run_dir or '(none)'} disappeared; start a new run",
            code="run_dir_missing",
        )
    (run_dir / CANCEL_FILE).unlink(missing_ok=True)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.QUEUED,
        cancel_requested=False,
        finished_at=None,
        error="",
        # A failed script's done event is history now: the next attempt writes its own. (An
        # abandoned run keeps one that its worker read but did not get to act on.)
        done_event=None if run.status in TrainingRun.FINISHED else run.done_event,
    )
    audit(None, "training.resume", run)
    if enqueue:
        transaction.on_commit(lambda: training_run_task(run.pk))
    run.refresh_from_db()
    return run


# ------------------------------------------------------------------------------ versions


def model_version_activate(
    *, version: ModelVersion, user: Any = None, enqueue: bool = True, force: bool = False
) -> bool:
    """Make ``version`` its KB's active one of its kind. True when done at once; False when an
    embedding version's index must be (re)built first: the worker builds it and activates it.

    A version that a recorded evaluation shows regressing against the active one on the gate
    metrics is refused (:class:`~training.activation.PromotionRefused`) unless ``force``."""
    if not force:
        promotion_check(version)
    if version.kind == ModelKind.EMBEDDING and version_index_status(version) != "ready":
        if not enqueue:
            raise Conflict(
                f"the index of embedding version {version.label} is not ready",
                code="index_not_ready",
            )
        transaction.on_commit(lambda: embedding_version_activate_task(version.pk))
        audit(user, "model_version.activate", version, queued=True)
        return False
    active_model_set(version=version, user=user, force=True)
    audit(user, "model_version.activate", version)
    return True


def model_version_merge(*, version: ModelVersion, enqueue: bool = True) -> ModelVersion:
    """Queue merging a generator adapter into its base model (done by the worker)."""
    if version.kind != ModelKind.GENERATOR or not version.is_adapter:
        raise Conflict(f"{version.label} is not a generator adapter: nothing to merge")
    if version.merge_status in (MergeStatus.QUEUED, MergeStatus.RUNNING):
        raise Conflict(f"{version.label} is already being merged", code="merging")
    ModelVersion.objects.filter(pk=version.pk).update(
        merge_status=MergeStatus.QUEUED, merge_error=""
    )
    audit(None, "model_version.merge", version)
    if enqueue:
        transaction.on_commit(lambda: model_version_merge_task(version.pk))
    version.refresh_from_db()
    return version
