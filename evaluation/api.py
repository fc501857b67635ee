"""Evaluation API: start, list, inspect, cancel and resume runs; per-question results; the
promotion gate of a model version. Admins start and stop runs; reviewers read them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field

from corpus.knowledge.access import api_kb
from corpus.knowledge.selectors import kbs_visible_to
from evaluation.models import EvalResult, EvalRun, QuestionSet
from evaluation.selectors import kb_eval_runs, run_is_stale, run_report
from evaluation.services import eval_run_cancel, eval_run_resume, eval_run_start
from raftweb.api_auth import require_role
from raftweb.core.roles import Role
from raftweb.errors import NotFound
from raftweb.eval.configs import DEFAULT_K, DEFAULT_MODE, MAX_K, parse_configs
from training.activation import promotion_gate
from training.models import ModelVersion

router = Router(tags=["Evaluation"])

READ = (Role.ADMIN, Role.REVIEWER)


class EvalRunIn(Schema):
    configs: list[str] = Field(
        min_length=1, max_length=12, description='e.g. ["emb=base,gen=base", "gen=active"]'
    )
    mode: Literal["hybrid", "dense", "bm25"] = DEFAULT_MODE
    k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K)
    question_set: str | None = Field(
        default=None, max_length=200, description="An imported set's name; default: eval split."
    )
    limit: int | None = Field(default=None, ge=1)


class EvalConfigOut(Schema):
    config: str
    metrics: dict[str, float | None]
    counts: dict[str, Any]


class EvalRunOut(Schema):
    id: int
    kb: str
    status: str
    stale: bool
    source: str
    mode: str
    k: int
    configs: list[str]
    total_units: int
    done_units: int
    percent: int
    eta_seconds: float | None
    cancel_requested: bool
    judge_unavailable: str
    gold_missing: list[str]
    error: str
    created_at: datetime
    finished_at: datetime | None


class EvalRunDetailOut(EvalRunOut):
    questions: int
    results: list[EvalConfigOut]


class EvalResultOut(Schema):
    question_id: int
    ordinal: int
    question: str
    gold_answer: str
    config: str
    status: str
    outcome: str
    answer: str
    final: str
    generator: str
    scores: dict[str, Any]
    hits: list[dict[str, Any]]
    citations: list[dict[str, Any]]
    error: str


class GateOut(Schema):
    version: int
    regressions: list[str]
    deltas: list[dict[str, Any]]
    eval_run: int | None
    note: str


def _run_out(run: EvalRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "kb": run.kb.slug,
        "status": run.status,
        "stale": run_is_stale(run),
        "source": run.source,
        "mode": run.mode,
        "k": run.k,
        "configs": run.labels,
        "total_units": run.total_units,
        "done_units": run.done_units,
        "percent": run.percent,
        "eta_seconds": run.eta_seconds,
        "cancel_requested": run.cancel_requested,
        "judge_unavailable": run.judge_unavailable,
        "gold_missing": run.gold_missing or [],
        "error": run.error,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


def _run(request: HttpRequest, run_id: int, *roles: Role) -> EvalRun:
    require_role(request, *roles)
    run = kb_eval_runs().filter(pk=run_id, kb__in=kbs_visible_to(request.user)).first()
    if run is None:
        raise NotFound(f"No evaluation run {run_id}.")
    return run


@router.post("/kbs/{slug}/eval-runs", response={201: EvalRunOut})
def eval_run_create(request: HttpRequest, slug: str, payload: EvalRunIn) -> tuple[int, Any]:
    kb = api_kb(request, slug, Role.ADMIN)
    qset = None
    if payload.question_set:
        qset = QuestionSet.objects.filter(kb=kb, name=payload.question_set).first()
        if qset is None:
            raise NotFound(f"No question set {payload.question_set!r} in {kb.slug!r}.")
    run = eval_run_start(
        kb=kb,
        configs=parse_configs(payload.configs),
        mode=payload.mode,
        k=payload.k,
        question_set=qset,
        limit=payload.limit,
        user=request.user,
    )
    return 201, _run_out(run)


@router.get("/kbs/{slug}/eval-runs", response=list[EvalRunOut])
def eval_run_list(request: HttpRequest, slug: str) -> list[dict[str, Any]]:
    kb = api_kb(request, slug, *READ)
    return [_run_out(r) for r in kb_eval_runs(kb)[:100]]


@router.get("/eval-runs/{run_id}", response=EvalRunDetailOut, url_name="eval_run_detail")
def eval_run_detail(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = _run(request, run_id, *READ)
    report = run_report(run)
    return {**_run_out(run), "questions": report["questions"], "results": report["configs"]}


@router.get("/eval-runs/{run_id}/results", response=list[EvalResultOut])
def eval_run_results(request: HttpRequest, run_id: int) -> list[dict[str, Any]]:
    run = _run(request, run_id, *READ)
    labels = run.labels
    rows = EvalResult.objects.filter(run=run, state=EvalResult.State.DONE).select_related(
        "question"
    )
    return [
        {
            "question_id": r.question_id,
            "ordinal": r.question.ordinal,
            "question": r.question.question,
            "gold_answer": r.question.gold_answer,
            "config": labels[r.config_index] if r.config_index < len(labels) else "",
            "status": r.status,
            "outcome": r.outcome,
            "answer": r.answer,
            "final": r.final,
            "generator": r.generator,
            "scores": r.scores or {},
            "hits": r.hits or [],
            "citations": r.citations or [],
            "error": r.error,
        }
        for r in rows
    ]


@router.post("/eval-runs/{run_id}/cancel", response=EvalRunOut)
def eval_run_cancel_api(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = _run(request, run_id, Role.ADMIN)
    return _run_out(eval_run_cancel(run=run, user=request.user))


@router.post("/eval-runs/{run_id}/resume", response=EvalRunOut)
def eval_run_resume_api(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = _run(request, run_id, Role.ADMIN)
    return _run_out(eval_run_resume(run=run, user=request.user))


@router.get("/model-versions/{version_id}/gate", response=GateOut)
def model_version_gate(request: HttpRequest, version_id: int) -> dict[str, Any]:
    """The version against the active one on the gate metrics, from recorded evaluations."""
    require_role(request, Role.ADMIN)
    version = (
        ModelVersion.objects.select_related("kb")
        .filter(pk=version_id, kb__in=kbs_visible_to(request.user))
        .first()
    )
    if version is None:
        raise NotFound(f"No model version {version_id}.")
    report = promotion_gate(version, evaluate=False)
    data = (
        report.as_dict()
        if report is not None
        else {"regressions": [], "deltas": [], "eval_run": None, "note": "no gate"}
    )
    return {"version": version.pk, **data}
