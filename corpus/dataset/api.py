"""Dataset API: Q&A pairs, review actions, agreement, import and export."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse
from ninja import File, Form, Query, Router, Schema
from ninja.files import UploadedFile

from corpus.dataset.io import qa_export_lines, qa_import
from corpus.dataset.selectors import SORTS, review_queue
from corpus.dataset.services import PairFilter, qa_agreement, qa_pair_update, qa_pairs_bulk
from corpus.knowledge.access import api_kb
from corpus.knowledge.selectors import kbs_visible_to
from corpus.models import QAPair
from raftweb.api_auth import require_role
from raftweb.core.roles import Role
from raftweb.errors import Invalid, NotFound
from raftweb.raft.formats import COMPLETION_STOP

router = Router(tags=["RAFT datasets"])


MAX_PAGE = 200


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
    # Pairs left out because the KB already has them (same question and answer): importing
    # the same file twice adds nothing.
    duplicates: int = 0
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
    kb = api_kb(request, slug, Role.REVIEWER, Role.ADMIN)
    if sort not in SORTS:
        raise Invalid(f"sort must be one of {', '.join(SORTS)}", status=422)
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
        raise NotFound(f"No Q&A pair {pair_id}.")
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
    return _pair_out(_pair(request, pair_id))


@router.post(
    "/kbs/{slug}/qa-pairs/bulk",
    response=BulkOut,
    summary="Approve/reject/reset every pair matching a filter",
)
def qa_pairs_bulk_api(request: HttpRequest, slug: str, payload: BulkIn) -> dict[str, int]:
    kb = api_kb(request, slug, Role.REVIEWER, Role.ADMIN)
    n = qa_pairs_bulk(
        kb=kb,
        user=request.user,
        filters=PairFilter.from_params(payload.filters.dict()),
        action=payload.action,
    )
    return {"changed": n}


@router.get("/kbs/{slug}/qa-agreement", response=AgreementOut, summary="Judge–human agreement")
def qa_agreement_api(request: HttpRequest, slug: str, threshold: int = 3) -> dict[str, Any]:
    kb = api_kb(request, slug, Role.REVIEWER, Role.ADMIN)
    return qa_agreement(kb=kb, threshold=max(1, min(5, threshold)))


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
    kb = api_kb(request, slug, Role.ADMIN)
    return qa_import(
        kb=kb,
        data=file.read(),
        filename=file.name or "",
        user=request.user,
        status=status,
        split=split or None,
    )


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
    completion_stop: bool = True,
) -> StreamingHttpResponse:
    """``completion_stop`` (completion format): end each completion with ``<STOP>`` as the
    RAFT reference does."""
    kb = api_kb(request, slug, Role.ADMIN)
    stop = COMPLETION_STOP if completion_stop else ""
    count, lines = qa_export_lines(kb=kb, fmt=format, split=split, status=status, stop=stop)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{kb.slug}-{format}-{split}.jsonl"'
    response["X-Row-Count"] = str(count)
    return response
