"""API for RAFT generation, review, import and export (mounted at /api/ by raftweb.api)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse
from ninja import File, Form, Query, Router, Schema
from ninja.files import UploadedFile

from corpus.models import KnowledgeBase
from corpus.models.qa import GenerationJob, QAPair
from corpus.selectors import kbs_visible_to
from corpus.selectors_qa import SORTS, review_queue
from corpus.services_qa import (
    PairFilter,
    QAError,
    generation_job_cancel,
    generation_job_create,
    generation_job_resume,
    qa_agreement,
    qa_export_lines,
    qa_import,
    qa_pair_update,
    qa_pairs_bulk,
)
from raftweb.api_auth import require_role
from raftweb.core.errors import ApiError
from raftweb.core.roles import Role

router = Router(tags=["RAFT datasets"])

MAX_PAGE = 200


class GenerationJobIn(Schema):
    config: dict[str, Any] = {}


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


class QAPairOut(Schema):
    id: int
    kb: str
    job_id: int | None
    question: str
    cot_answer: str
    final_answer: str
    context_chunk_ids: list[int | None]
    oracle_index: int | None
    oracle_chunk_id: int | None
    document: str | None
    refusal: bool
    split: str
    status: str
    auto_reject_reason: str
    judge_score: int | None
    judge_reason: str
    quote_status: str
    quote_checks: list[dict[str, Any]]
    source: str
    version: int
    updated_at: datetime


class QAPairPage(Schema):
    count: int
    offset: int
    limit: int
    items: list[QAPairOut]


class QAPairPatchIn(Schema):
    version: int
    action: str = "edit"  # approve | reject | edit | reset
    question: str | None = None
    cot_answer: str | None = None
    final_answer: str | None = None
    split: str | None = None
    note: str = ""


class PairFilterIn(Schema):
    status: str = ""
    min_score: int | None = None
    max_score: int | None = None
    unscored: bool = False
    quote: str = ""
    document: int | None = None
    split: str = ""
    source: str = ""
    job: int | None = None
    q: str = ""


class BulkIn(Schema):
    action: str
    filters: PairFilterIn = PairFilterIn()


class BulkOut(Schema):
    changed: int


class ImportSkipOut(Schema):
    line: int
    error: str


class ImportOut(Schema):
    imported: int
    skipped: list[ImportSkipOut]


class AgreementOut(Schema):
    n: int
    threshold: int
    confusion: list[list[int]]
    kappa: float | None
    agreement: float | None
    histogram: dict[str, list[int]]
    best_threshold: int | None
    best_agreement: float | None
    best_kappa: float | None


def _kb(request: HttpRequest, slug: str) -> KnowledgeBase:
    kb = kbs_visible_to(request.user).filter(slug=slug).first()
    if kb is None:
        raise ApiError(404, "not_found", f"No knowledge base {slug!r}.")
    return kb


def _err(exc: QAError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


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


def _pair_out(p: QAPair) -> dict[str, Any]:
    return {
        "id": p.pk,
        "kb": p.kb.slug,
        "job_id": p.job_id,
        "question": p.question,
        "cot_answer": p.cot_answer,
        "final_answer": p.final_answer,
        "context_chunk_ids": list(p.context_chunk_ids or []),
        "oracle_index": p.oracle_index,
        "oracle_chunk_id": p.oracle_chunk_id,
        "document": p.document.name if p.document else None,
        "refusal": p.refusal,
        "split": p.split,
        "status": p.status,
        "auto_reject_reason": p.auto_reject_reason,
        "judge_score": p.judge_score,
        "judge_reason": p.judge_reason,
        "quote_status": p.quote_status,
        "quote_checks": p.quote_checks or [],
        "source": p.source,
        "version": p.version,
        "updated_at": p.updated_at,
    }


def _job(request: HttpRequest, job_id: int) -> GenerationJob:
    job = GenerationJob.objects.select_related("kb").filter(pk=job_id).first()
    if job is None:
        raise ApiError(404, "not_found", f"No generation job {job_id}.")
    return job


# ----------------------------------------------------------------------------- generation


@router.post(
    "/kbs/{slug}/generation-jobs",
    response={201: GenerationJobOut},
    summary="Launch a generation job",
)
def generation_job_launch(
    request: HttpRequest, slug: str, payload: GenerationJobIn
) -> tuple[int, dict[str, Any]]:
    require_role(request, Role.ADMIN)
    kb = _kb(request, slug)
    try:
        job = generation_job_create(kb=kb, user=request.user, config=payload.config)
    except QAError as exc:
        raise _err(exc) from None
    job.refresh_from_db()
    return 201, _job_out(job)


@router.get(
    "/kbs/{slug}/generation-jobs", response=list[GenerationJobOut], summary="A KB's generation jobs"
)
def generation_jobs_list(request: HttpRequest, slug: str) -> list[dict[str, Any]]:
    require_role(request, Role.ADMIN)
    kb = _kb(request, slug)
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
    try:
        return _job_out(generation_job_cancel(job=_job(request, job_id)))
    except QAError as exc:
        raise _err(exc) from None


@router.post(
    "/generation-jobs/{job_id}/resume",
    response=GenerationJobOut,
    summary="Resume a job (done chunks are kept)",
)
def generation_job_resume_api(request: HttpRequest, job_id: int) -> dict[str, Any]:
    require_role(request, Role.ADMIN)
    try:
        job = generation_job_resume(job=_job(request, job_id))
    except QAError as exc:
        raise _err(exc) from None
    job.refresh_from_db()
    return _job_out(job)


# ----------------------------------------------------------------------------- review


@router.get(
    "/kbs/{slug}/qa-pairs",
    response=QAPairPage,
    summary="List Q&A pairs (filters as in the review queue)",
)
def qa_pairs_list(
    request: HttpRequest,
    slug: str,
    filters: Query[PairFilterIn],
    sort: str = "id",
    offset: int = 0,
    limit: int = 50,
) -> dict[str, Any]:
    require_role(request, Role.REVIEWER, Role.ADMIN)
    kb = _kb(request, slug)
    if sort not in SORTS:
        raise ApiError(422, "invalid", f"sort must be one of {', '.join(SORTS)}")
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    qs = review_queue(
        kb=kb, filters=PairFilter.from_params(filters.dict()), sort=sort
    ).select_related("kb")
    return {
        "count": qs.count(),
        "offset": offset,
        "limit": limit,
        "items": [_pair_out(p) for p in qs[offset : offset + limit]],
    }


def _pair(request: HttpRequest, pair_id: int) -> QAPair:
    pair = QAPair.objects.select_related("kb", "document").filter(pk=pair_id).first()
    if pair is None or not kbs_visible_to(request.user).filter(pk=pair.kb_id).exists():
        raise ApiError(404, "not_found", f"No Q&A pair {pair_id}.")
    return pair


@router.get("/qa-pairs/{pair_id}", response=QAPairOut, summary="One Q&A pair")
def qa_pair_get(request: HttpRequest, pair_id: int) -> dict[str, Any]:
    require_role(request, Role.REVIEWER, Role.ADMIN)
    return _pair_out(_pair(request, pair_id))


@router.patch(
    "/qa-pairs/{pair_id}",
    response=QAPairOut,
    summary="Approve, reject or edit a pair (send the version you read; 409 if it changed)",
)
def qa_pair_patch(request: HttpRequest, pair_id: int, payload: QAPairPatchIn) -> dict[str, Any]:
    require_role(request, Role.REVIEWER, Role.ADMIN)
    pair = _pair(request, pair_id)
    try:
        qa_pair_update(
            pair_id=pair.pk,
            user=request.user,
            version=payload.version,
            action=payload.action,
            question=payload.question,
            cot_answer=payload.cot_answer,
            final_answer=payload.final_answer,
            split=payload.split,
            note=payload.note,
        )
    except QAError as exc:
        raise _err(exc) from None
    return _pair_out(_pair(request, pair_id))


@router.post(
    "/kbs/{slug}/qa-pairs/bulk",
    response=BulkOut,
    summary="Approve/reject/reset every pair matching a filter",
)
def qa_pairs_bulk_api(request: HttpRequest, slug: str, payload: BulkIn) -> dict[str, int]:
    require_role(request, Role.REVIEWER, Role.ADMIN)
    kb = _kb(request, slug)
    try:
        n = qa_pairs_bulk(
            kb=kb,
            user=request.user,
            filters=PairFilter.from_params(payload.filters.dict()),
            action=payload.action,
        )
    except QAError as exc:
        raise _err(exc) from None
    return {"changed": n}


@router.get("/kbs/{slug}/qa-agreement", response=AgreementOut, summary="Judge–human agreement")
def qa_agreement_api(request: HttpRequest, slug: str, threshold: int = 3) -> dict[str, Any]:
    require_role(request, Role.REVIEWER, Role.ADMIN)
    return qa_agreement(kb=_kb(request, slug), threshold=max(1, min(5, threshold)))


# ----------------------------------------------------------------------------- import / export


@router.post(
    "/kbs/{slug}/qa-pairs/import",
    response=ImportOut,
    summary="Import pairs (RAFT hf/chat JSONL, question/answer JSONL or CSV)",
)
def qa_import_api(
    request: HttpRequest,
    slug: str,
    file: File[UploadedFile],
    status: Form[str] = "pending",
    split: Form[str] = "",
) -> dict[str, Any]:
    require_role(request, Role.ADMIN)
    kb = _kb(request, slug)
    try:
        return qa_import(
            kb=kb,
            data=file.read(),
            filename=file.name or "",
            user=request.user,
            status=status,
            split=split or None,
        )
    except QAError as exc:
        raise _err(exc) from None


@router.get(
    "/kbs/{slug}/qa-pairs/export",
    summary="Export the dataset as JSONL (hf, chat, completion, eval)",
    response={200: None},
)
def qa_export_api(
    request: HttpRequest,
    slug: str,
    format: str = "hf",
    split: str = "train",  # noqa: A002
    status: str = "approved",
) -> StreamingHttpResponse:
    require_role(request, Role.ADMIN)
    kb = _kb(request, slug)
    try:
        count, lines = qa_export_lines(kb=kb, fmt=format, split=split, status=status)
    except QAError as exc:
        raise _err(exc) from None
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{kb.slug}-{format}-{split}.jsonl"'
    response["X-Row-Count"] = str(count)
    return response


# ----------------------------------------------------------------------------- prompts


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
    require_role(request, Role.ADMIN)
    from corpus.models.qa import KBPromptOverrides
    from raftweb.raft.prompts import PromptSet

    kb = _kb(request, slug)
    row = KBPromptOverrides.objects.filter(kb=kb).first()
    return {"defaults": PromptSet().as_dict(), "overrides": dict(row.overrides) if row else {}}


@router.put(
    "/kbs/{slug}/qa-prompts", response=PromptsOut, summary="Replace the KB's prompt overrides"
)
def qa_prompts_put(request: HttpRequest, slug: str, payload: PromptsIn) -> dict[str, Any]:
    require_role(request, Role.ADMIN)
    from corpus.services_qa import kb_prompts_update
    from raftweb.raft.prompts import PromptSet

    kb = _kb(request, slug)
    try:
        row = kb_prompts_update(kb=kb, overrides=payload.overrides)
    except QAError as exc:
        raise _err(exc) from None
    return {"defaults": PromptSet().as_dict(), "overrides": dict(row.overrides)}
