"""Generation API: launch, list, inspect, cancel and resume jobs; per-KB prompts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field

from corpus.generation.prompts import kb_prompts_update
from corpus.generation.services import (
    generation_job_cancel,
    generation_job_create,
    generation_job_resume,
)
from corpus.knowledge.access import api_kb
from corpus.models import GenerationJob, KBPromptOverrides
from raftweb.api_auth import require_role
from raftweb.core.roles import Role
from raftweb.core.typedforms import config_schema, config_values
from raftweb.errors import NotFound
from raftweb.raft.pipeline import GenerationConfig
from raftweb.raft.prompts import PromptSet

router = Router(tags=["RAFT generation"])


GenerationConfigIn = config_schema(GenerationConfig)


class GenerationJobIn(Schema):
    config: GenerationConfigIn = Field(default_factory=GenerationConfigIn)  # type: ignore[valid-type]


class GenerationJobOut(Schema):
    id: int
    kb: str
    status: str
    config: dict[str, Any]
    chunks_total: int
    chunks_done: int
    chunks_failed: int
    rows: int
    rows_rejected: int
    tokens_in: int
    tokens_out: int
    calls: int
    cost: float
    tokens_per_s: float
    eta_seconds: float | None
    percent: int
    error: str
    notes: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _job_out(job: GenerationJob) -> dict[str, Any]:
    return {
        "id": job.pk,
        "kb": job.kb.slug,
        "status": job.status,
        "config": job.config,
        "chunks_total": job.chunks_total,
        "chunks_done": job.chunks_done,
        "chunks_failed": job.chunks_failed,
        "rows": job.rows,
        "rows_rejected": job.rows_rejected,
        "tokens_in": job.tokens_in,
        "tokens_out": job.tokens_out,
        "calls": job.calls,
        "cost": job.cost,
        "tokens_per_s": job.tokens_per_s,
        "eta_seconds": job.eta_seconds,
        "percent": job.percent,
        "error": job.error,
        "notes": job.notes or [],
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def _job(request: HttpRequest, job_id: int) -> GenerationJob:
    job = GenerationJob.objects.select_related("kb").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No generation job {job_id}.")
    return job


@router.post(
    "/kbs/{slug}/generation-jobs",
    response={201: GenerationJobOut},
    summary="Launch a generation job",
)
def generation_job_launch(
    request: HttpRequest, slug: str, payload: GenerationJobIn
) -> tuple[int, dict[str, Any]]:
    kb = api_kb(request, slug, Role.ADMIN)
    job = generation_job_create(kb=kb, user=request.user, config=config_values(payload.config))
    job.refresh_from_db()
    return 201, _job_out(job)


@router.get(
    "/kbs/{slug}/generation-jobs", response=list[GenerationJobOut], summary="A KB's generation jobs"
)
def generation_jobs_list(request: HttpRequest, slug: str) -> list[dict[str, Any]]:
    kb = api_kb(request, slug, Role.ADMIN)
    return [_job_out(j) for j in GenerationJob.objects.filter(kb=kb).select_related("kb")[:100]]


@router.get(
    "/generation-jobs/{job_id}", response=GenerationJobOut, summary="Job progress, tokens and cost"
)
def generation_job_get(request: HttpRequest, job_id: int) -> dict[str, Any]:
    require_role(request, Role.ADMIN)
    return _job_out(_job(request, job_id))


@router.post("/generation-jobs/{job_id}/cancel", response=GenerationJobOut, summary="Cancel a job")
def generation_job_cancel_api(request: HttpRequest, job_id: int) -> dict[str, Any]:
    require_role(request, Role.ADMIN)
    return _job_out(generation_job_cancel(job=_job(request, job_id)))


@router.post(
    "/generation-jobs/{job_id}/resume",
    response=GenerationJobOut,
    summary="Resume a job (done chunks are kept)",
)
def generation_job_resume_api(request: HttpRequest, job_id: int) -> dict[str, Any]:
    require_role(request, Role.ADMIN)
    job = generation_job_resume(job=_job(request, job_id))
    job.refresh_from_db()
    return _job_out(job)


class PromptsOut(Schema):
    defaults: dict[str, str]
    overrides: dict[str, str]


class PromptsIn(Schema):
    overrides: dict[str, str]


@router.get(
    "/kbs/{slug}/qa-prompts",
    response=PromptsOut,
    summary="The KB's RAFT prompts (defaults and overrides)",
)
def qa_prompts_get(request: HttpRequest, slug: str) -> dict[str, Any]:
    kb = api_kb(request, slug, Role.ADMIN)
    row = KBPromptOverrides.objects.filter(kb=kb).first()
    return {"defaults": PromptSet().as_dict(), "overrides": dict(row.overrides) if row else {}}


@router.put(
    "/kbs/{slug}/qa-prompts", response=PromptsOut, summary="Replace the KB's prompt overrides"
)
def qa_prompts_put(request: HttpRequest, slug: str, payload: PromptsIn) -> dict[str, Any]:
    kb = api_kb(request, slug, Role.ADMIN)
    row = kb_prompts_update(kb=kb, overrides=payload.overrides)
    return {"defaults": PromptSet().as_dict(), "overrides": dict(row.overrides)}
