"""Training API (admins): launch, list, inspect, cancel and resume runs; list, activate and
merge model versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field

from corpus.knowledge.access import api_kb
from corpus.knowledge.selectors import kbs_visible_to
from raftweb.api_auth import require_role
from raftweb.core.roles import Role
from raftweb.errors import NotFound
from training.models import ModelVersion, TrainingRun
from training.selectors import (
    active_versions,
    kb_runs,
    kb_versions,
    run_is_stale,
    run_log_tail,
    run_metric_series,
    run_metrics,
    run_version_id,
    version_index_status,
)
from training.services import (
    model_version_activate,
    model_version_merge,
    training_overrides,
    training_run_cancel,
    training_run_resume,
    training_run_start,
)

router = Router(tags=["Training"])

RECENT_METRICS = 50


class TrainingRunIn(Schema):
    kind: Literal["generator", "embedding"]
    method: Literal["lora", "qlora", "full"] | None = None
    preset: str | None = Field(default=None, max_length=100)
    base_model: str | None = Field(default=None, max_length=500)
    epochs: float | None = Field(default=None, gt=0)
    learning_rate: float | None = Field(default=None, gt=0)
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="More values of the engine's training config."
    )
    activate: bool = Field(default=False, description="Activate the new version on success.")


class TrainingRunOut(Schema):
    id: int
    kb: str
    kind: str
    method: str
    preset: str
    status: str
    stale: bool
    cancel_requested: bool
    activate_on_success: bool
    config: dict[str, Any]
    run_dir: str
    attempts: int
    step: int
    total_steps: int
    progress: float
    percent: int
    eta_seconds: float | None
    rows_train: int
    rows_eval: int
    rows_from_feedback: int
    data_hash: str
    metrics: dict[str, Any]
    error: str
    notes: list[str]
    version: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class MetricOut(Schema):
    line: int
    event: str
    step: int | None
    values: dict[str, Any]


class TrainingRunDetailOut(TrainingRunOut):
    recent_metrics: list[MetricOut]
    log_tail: str


class MetricSeriesOut(Schema):
    run: int
    status: str
    step: int
    total_steps: int
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]


class ModelVersionOut(Schema):
    id: int
    kb: str
    kind: str
    label: str
    base_model: str
    path: str
    is_adapter: bool
    merged_path: str
    merge_status: str
    merge_error: str
    run: int | None
    dataset_hash: str
    metrics: dict[str, Any]
    embedding_version: str
    index_status: str
    active: bool
    created_at: datetime


class ActivateOut(Schema):
    activated: bool = Field(
        description="False: the version's index is being built; it is activated when ready."
    )
    version: ModelVersionOut


def _run_out(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "kb": run.kb.slug,
        "kind": run.kind,
        "method": run.method,
        "preset": run.preset,
        "status": run.status,
        "stale": run_is_stale(run),
        "cancel_requested": run.cancel_requested,
        "activate_on_success": run.activate_on_success,
        "config": run.config,
        "run_dir": run.run_dir,
        "attempts": run.attempts,
        "step": run.step,
        "total_steps": run.total_steps,
        "progress": run.progress,
        "percent": run.percent,
        "eta_seconds": run.eta_seconds,
        "rows_train": run.rows_train,
        "rows_eval": run.rows_eval,
        "rows_from_feedback": run.rows_from_feedback,
        "data_hash": run.data_hash,
        "metrics": run.metrics or {},
        "error": run.error,
        "notes": run.notes or [],
        "version": run_version_id(run),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def _version_out(version: ModelVersion, active_ids: set[int] | None = None) -> dict[str, Any]:
    if active_ids is None:
        active_ids = {v.pk for v in active_versions(version.kb).values() if v is not None}
    return {
        "id": version.pk,
        "kb": version.kb.slug,
        "kind": version.kind,
        "label": version.label,
        "base_model": version.base_model,
        "path": version.path,
        "is_adapter": version.is_adapter,
        "merged_path": version.merged_path,
        "merge_status": version.merge_status,
        "merge_error": version.merge_error,
        "run": version.run_id,
        "dataset_hash": version.dataset_hash,
        "metrics": version.metrics or {},
        "embedding_version": version.embedding_version,
        "index_status": version_index_status(version),
        "active": version.pk in active_ids,
        "created_at": version.created_at,
    }


def _run(request: HttpRequest, run_id: int) -> TrainingRun:
    require_role(request, Role.ADMIN)
    run = (
        kb_runs()
        .filter(pk=run_id, kb__in=kbs_visible_to(request.user))
        .select_related("kb", "model_version")
        .first()
    )
    if run is None:
        raise NotFound(f"No training run {run_id}.")
    return run


def _version(request: HttpRequest, version_id: int) -> ModelVersion:
    require_role(request, Role.ADMIN)
    version = (
        ModelVersion.objects.select_related("kb")
        .filter(pk=version_id, kb__in=kbs_visible_to(request.user))
        .first()
    )
    if version is None:
        raise NotFound(f"No model version {version_id}.")
    return version


@router.post(
    "/kbs/{slug}/training-runs", response={201: TrainingRunOut}, summary="Launch a training run"
)
def training_run_launch(
    request: HttpRequest, slug: str, payload: TrainingRunIn
) -> tuple[int, dict[str, Any]]:
    kb = api_kb(request, slug, Role.ADMIN)
    overrides = dict(payload.overrides)
    overrides.update(
        training_overrides(
            kind=payload.kind,
            preset=payload.preset,
            base_model=payload.base_model,
            epochs=payload.epochs,
            learning_rate=payload.learning_rate,
        )
    )
    run = training_run_start(
        kb=kb,
        kind=payload.kind,
        method=payload.method,
        preset=payload.preset,
        overrides=overrides,
        activate=payload.activate,
        user=request.user,
    )
    return 201, _run_out(run)


@router.get(
    "/kbs/{slug}/training-runs", response=list[TrainingRunOut], summary="A KB's training runs"
)
def training_runs_list(request: HttpRequest, slug: str) -> list[dict[str, Any]]:
    kb = api_kb(request, slug, Role.ADMIN)
    return [_run_out(r) for r in kb_runs(kb)[:100]]


@router.get(
    "/training-runs/{run_id}",
    response=TrainingRunDetailOut,
    summary="A run: progress, recent metrics, the end of its log",
)
def training_run_get(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = _run(request, run_id)
    return {
        **_run_out(run),
        "recent_metrics": [
            {"line": m.line, "event": m.event, "step": m.step, "values": m.values}
            for m in run_metrics(run, limit=RECENT_METRICS)
        ],
        "log_tail": run_log_tail(run),
    }


@router.get(
    "/training-runs/{run_id}/metrics",
    response=MetricSeriesOut,
    summary="A run's loss curves (one point per step)",
)
def training_run_metrics(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return run_metric_series(_run(request, run_id))


@router.post("/training-runs/{run_id}/cancel", response=TrainingRunOut, summary="Cancel a run")
def training_run_cancel_api(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return _run_out(training_run_cancel(run=_run(request, run_id)))


@router.post(
    "/training-runs/{run_id}/resume",
    response=TrainingRunOut,
    summary="Resume a failed, cancelled or abandoned run from its newest checkpoint",
)
def training_run_resume_api(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return _run_out(training_run_resume(run=_run(request, run_id)))


@router.get(
    "/kbs/{slug}/model-versions",
    response=list[ModelVersionOut],
    summary="A KB's trained model versions",
)
def model_versions_list(request: HttpRequest, slug: str) -> list[dict[str, Any]]:
    kb = api_kb(request, slug, Role.ADMIN)
    active_ids = {v.pk for v in active_versions(kb).values() if v is not None}
    return [_version_out(v, active_ids) for v in kb_versions(kb)[:200]]


@router.post(
    "/model-versions/{version_id}/activate",
    response={200: ActivateOut, 202: ActivateOut},
    summary="Make a version the KB's active generator or embedding model",
)
def model_version_activate_api(request: HttpRequest, version_id: int) -> tuple[int, dict[str, Any]]:
    version = _version(request, version_id)
    done = model_version_activate(version=version, user=request.user)
    version.refresh_from_db()
    return (200 if done else 202), {"activated": done, "version": _version_out(version)}


@router.post(
    "/model-versions/{version_id}/merge",
    response={202: ModelVersionOut},
    summary="Merge a generator adapter into its base model (in the worker)",
)
def model_version_merge_api(request: HttpRequest, version_id: int) -> tuple[int, dict[str, Any]]:
    version = model_version_merge(version=_version(request, version_id))
    return 202, _version_out(version)
