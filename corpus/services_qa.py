"""RAFT Q&A services: generation jobs, review, import and export.

One code path under the UI, the API, the CLI and the Huey worker. Generation runs the engine
pipeline (:mod:`raftweb.raft.pipeline`) on a private event-loop thread while this thread does
all database work: it prepares each chunk (hard negatives from the corpus retrieval service,
contexts pre-assembled from the job seed), then saves each finished chunk — its rows, its
model calls and its unit state — in one transaction. A unit that is done is never redone, so
a killed worker, restarted, finishes the job with no duplicate and no lost row.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from corpus.models import Chunk, Document, KnowledgeBase
from corpus.models.qa import (
    DocumentSplit,
    GenerationJob,
    GenerationUnit,
    KBPromptOverrides,
    ModelCall,
    QAPair,
    ReviewEvent,
)
from raftweb.llm import LLMError, get_backend
from raftweb.raft.answer import format_answer, parse_answer
from raftweb.raft.context import ContextPlan
from raftweb.raft.formats import RaftRow, export_lines, parse_import
from raftweb.raft.matching import best_chunk
from raftweb.raft.pipeline import (
    ChunkInput,
    ChunkResult,
    ChunkStore,
    ConfigError,
    GenerationConfig,
    PipelineRunner,
    plan_row,
)
from raftweb.raft.prompts import PromptSet
from raftweb.raft.quotes import verify_quotes
from raftweb.raft.splits import split_documents

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5
STALE_AFTER = timedelta(minutes=2)
REVIEW_FIELDS = (
    "question",
    "cot_answer",
    "final_answer",
    "status",
    "split",
    "quote_status",
    "auto_reject_reason",
)


class QAError(Exception):
    """A user-facing failure of a Q&A service."""

    def __init__(self, message: str, code: str = "invalid", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class ConflictError(QAError):
    def __init__(
        self,
        message: str = "This pair was changed by someone else since you opened it; "
        "reload to see their change. Nothing was overwritten.",
    ) -> None:
        super().__init__(message, code="conflict", status=409)


# ------------------------------------------------------------------------------ prompts


def kb_prompts(kb: KnowledgeBase) -> PromptSet:
    row = KBPromptOverrides.objects.filter(kb=kb).first()
    return PromptSet.with_overrides(row.overrides if row else None)


def kb_prompts_update(*, kb: KnowledgeBase, overrides: Mapping[str, Any]) -> KBPromptOverrides:
    unknown = PromptSet.unknown_keys(overrides)
    if unknown:
        raise QAError(f"unknown prompt name(s): {', '.join(unknown)}")
    clean = {k: v for k, v in overrides.items() if isinstance(v, str) and v.strip()}
    row, _ = KBPromptOverrides.objects.update_or_create(kb=kb, defaults={"overrides": clean})
    return row


# ------------------------------------------------------------------------------ splits


def kb_document_splits(*, kb: KnowledgeBase, seed: int, eval_share: float) -> dict[int, str]:
    """Every ready document's split; documents seen before keep theirs."""
    doc_ids = list(Document.objects.filter(kb=kb).values_list("pk", flat=True))
    existing = dict(DocumentSplit.objects.filter(kb=kb).values_list("document_id", "split"))
    splits = split_documents(doc_ids, seed=seed, eval_share=eval_share, existing=existing)
    new = [
        DocumentSplit(kb=kb, document_id=d, split=s) for d, s in splits.items() if d not in existing
    ]
    DocumentSplit.objects.bulk_create(new, ignore_conflicts=True)
    return {int(k): v for k, v in splits.items()}  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ jobs


def generation_job_create(
    *,
    kb: KnowledgeBase,
    user: Any = None,
    config: Mapping[str, Any] | None = None,
    enqueue: bool = True,
) -> GenerationJob:
    """Validate the config, pick the chunks, create one unit per chunk, enqueue the run."""
    try:
        cfg = GenerationConfig.from_dict(config)
    except ConfigError as exc:
        raise QAError(str(exc)) from None
    chunks = Chunk.objects.filter(document__kb=kb, document__status=Document.Status.READY)
    if cfg.document_ids:
        chunks = chunks.filter(document_id__in=cfg.document_ids)
    chunk_ids = list(chunks.order_by("document_id", "ordinal").values_list("pk", flat=True))
    if cfg.limit_chunks:
        chunk_ids = chunk_ids[: cfg.limit_chunks]
    if not chunk_ids:
        raise QAError(
            "This knowledge base has no ready chunks to generate from "
            "(upload documents and wait until they are ready).",
            code="empty",
        )
    with transaction.atomic():
        job = GenerationJob.objects.create(
            kb=kb,
            created_by=user if getattr(user, "pk", None) else None,
            config=cfg.to_dict(),
            seed=cfg.seed,
            chunks_total=len(chunk_ids),
        )
        GenerationUnit.objects.bulk_create(
            [GenerationUnit(job=job, chunk_id=c) for c in chunk_ids], batch_size=500
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from corpus.tasks_qa import generation_job_task

    generation_job_task(job_id)


def generation_job_cancel(*, job: GenerationJob) -> GenerationJob:
    if not job.is_active:
        raise QAError(f"job {job.pk} is already {job.status}", code="not_active", status=409)
    GenerationJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    # A queued job that never started is cancelled at once; a running one stops at its next poll.
    GenerationJob.objects.filter(pk=job.pk, status=GenerationJob.Status.QUEUED).update(
        status=GenerationJob.Status.CANCELLED, finished_at=timezone.now()
    )
    GenerationJob.objects.filter(pk=job.pk, status=GenerationJob.Status.RUNNING).update(
        status=GenerationJob.Status.CANCELLING
    )
    job.refresh_from_db()
    return job


def generation_job_resume(*, job: GenerationJob, enqueue: bool = True) -> GenerationJob:
    """Re-run a job whose worker died or that ended with failed chunks: only units not done run."""
    if job.status in (GenerationJob.Status.CANCELLED,) and job.cancel_requested:
        GenerationJob.objects.filter(pk=job.pk).update(cancel_requested=False)
    if job.is_active and not job_is_stale(job) and job.status != GenerationJob.Status.QUEUED:
        raise QAError(f"job {job.pk} is still running", code="running", status=409)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=GenerationJob.Status.QUEUED, cancel_requested=False, finished_at=None, error=""
    )
    if enqueue:
        transaction.on_commit(lambda: _enqueue(job.pk))
    job.refresh_from_db()
    return job


def job_is_stale(job: GenerationJob) -> bool:
    """Running, but its worker has not reported for a while (killed or crashed)."""
    if job.status not in (GenerationJob.Status.RUNNING, GenerationJob.Status.CANCELLING):
        return False
    return job.heartbeat_at is None or timezone.now() - job.heartbeat_at > STALE_AFTER


@dataclass
class _RunContext:
    job: GenerationJob
    cfg: GenerationConfig
    kb: KnowledgeBase
    pool: list[int]
    splits: dict[int, str]
    prices: dict[str, tuple[float, float]]
    texts: dict[int, str]
    titles: dict[int, str]
    docs: dict[int, int]
    notes: list[str]


# Test hook: called after each unit is saved (a test raises here to simulate a killed worker).
after_unit_saved: Callable[[GenerationJob, GenerationUnit], None] | None = None


def generation_job_run(*, job_id: int) -> GenerationJob:
    """Run (or resume) a job to the end. Safe to call again after any interruption."""
    job = GenerationJob.objects.select_related("kb").get(pk=job_id)
    if job.status in (GenerationJob.Status.FINISHED, GenerationJob.Status.CANCELLED):
        return job
    if job.cancel_requested:
        return _finish(job, GenerationJob.Status.CANCELLED)
    cfg = GenerationConfig.from_dict(job.config)
    now = timezone.now()
    GenerationJob.objects.filter(pk=job.pk).update(
        status=GenerationJob.Status.RUNNING, heartbeat_at=now, started_at=job.started_at or now
    )
    job.refresh_from_db()
    units = deque(
        job.units.exclude(state=GenerationUnit.State.DONE)
        .filter(chunk__isnull=False)
        .select_related("chunk", "chunk__document")
        .order_by("id")
    )
    if not units:
        return _finish(job, None)
    from raftweb.core.services import profile_prices, profile_spec

    try:
        teacher = get_backend(profile_spec(cfg.teacher_profile))
        judge = get_backend(profile_spec(cfg.judge_profile)) if cfg.judge_enabled else None
    except (LLMError, Exception) as exc:  # noqa: BLE001 - a bad profile fails the job clearly
        GenerationJob.objects.filter(pk=job.pk).update(error=f"cannot load the model: {exc}")
        job.refresh_from_db()
        return _finish(job, GenerationJob.Status.FAILED)
    ctx = _RunContext(
        job=job,
        cfg=cfg,
        kb=job.kb,
        pool=list(
            Chunk.objects.filter(
                document__kb=job.kb, document__status=Document.Status.READY
            ).values_list("pk", flat=True)
        ),
        splits=kb_document_splits(kb=job.kb, seed=cfg.seed, eval_share=cfg.eval_share),
        prices={
            "teacher": profile_prices(cfg.teacher_profile),
            "judge": profile_prices(cfg.judge_profile),
        },
        texts={},
        titles={},
        docs={},
        notes=[],
    )
    runner = PipelineRunner(teacher=teacher, judge=judge, config=cfg, prompts=kb_prompts(job.kb))
    runner.start()
    inflight: dict[int, GenerationUnit] = {}
    window = cfg.max_concurrency * 2 + 2
    closed = False
    last_poll = time.monotonic()
    segment_start = time.monotonic()
    status: str | None = None
    try:
        while units or inflight:
            while units and len(inflight) < window:
                unit = units.popleft()
                runner.submit(_prepare_chunk(ctx, unit.chunk))
                inflight[unit.chunk_id] = unit
            if not units and not closed:
                runner.close()
                closed = True
            result = runner.get(timeout=CANCEL_POLL_S)
            if result is not None:
                unit = inflight.pop(int(result.chunk_id))  # type: ignore[arg-type]
                elapsed = time.monotonic() - segment_start
                segment_start = time.monotonic()
                _save_unit(ctx, unit, result, elapsed)
                if after_unit_saved is not None:
                    after_unit_saved(job, unit)
            # Poll for cancel after every saved chunk and at least every CANCEL_POLL_S.
            if result is not None or time.monotonic() - last_poll >= CANCEL_POLL_S:
                last_poll = time.monotonic()
                GenerationJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
                if GenerationJob.objects.filter(pk=job.pk, cancel_requested=True).exists():
                    status = GenerationJob.Status.CANCELLED
                    break
            if runner.finished and inflight:  # the loop died: leave those units pending
                ctx.notes.append("the generation loop stopped early; resume the job to finish it")
                status = GenerationJob.Status.FAILED
                break
    finally:
        if not runner.finished:
            runner.cancel()
        runner.join(timeout=10)
    if ctx.notes:
        GenerationJob.objects.filter(pk=job.pk).update(
            notes=list(dict.fromkeys((job.notes or []) + ctx.notes))
        )
    job.refresh_from_db()
    return _finish(job, status)


def _finish(job: GenerationJob, status: str | None) -> GenerationJob:
    if status is None:
        done = job.units.filter(state=GenerationUnit.State.DONE).count()
        failed = job.units.filter(state=GenerationUnit.State.FAILED).count()
        if failed and not done:
            status = GenerationJob.Status.FAILED
            first = (
                job.units.filter(state=GenerationUnit.State.FAILED)
                .values_list("error", flat=True)
                .first()
            )
            GenerationJob.objects.filter(pk=job.pk).update(
                error=f"every chunk failed; first error: {first}"
            )
        else:
            status = GenerationJob.Status.FINISHED
            if failed:
                GenerationJob.objects.filter(pk=job.pk).update(
                    error=f"{failed} chunk(s) failed; resume the job to retry them"
                )
    GenerationJob.objects.filter(pk=job.pk).update(status=status, finished_at=timezone.now())
    job.refresh_from_db()
    return job


def _text(ctx: _RunContext, ids: Iterable[int]) -> None:
    missing = [i for i in ids if i not in ctx.texts]
    if not missing:
        return
    for pk, text, title, doc_id, doc_name in Chunk.objects.filter(pk__in=missing).values_list(
        "pk", "text", "title", "document_id", "document__name"
    ):
        ctx.texts[pk] = text
        ctx.titles[pk] = title or doc_name
        ctx.docs[pk] = doc_id


def _hard_negatives(ctx: _RunContext, chunk: Chunk) -> list[int]:
    cfg = ctx.cfg
    if cfg.hard_negative_share <= 0 or cfg.num_distractors <= 0:
        return []
    from corpus.services import CorpusError, kb_search

    k = cfg.num_distractors * 2 + 3
    modes = [cfg.hard_negative_mode] + (["bm25"] if cfg.hard_negative_mode != "bm25" else [])
    for mode in modes:
        try:
            hits = kb_search(kb=ctx.kb, query=chunk.text[:2000], mode=mode, k=k)
        except (CorpusError, Exception) as exc:  # noqa: BLE001 - fall back, never fail the chunk
            note = f"hard negatives: {mode} search unavailable ({exc}); falling back"
            if note not in ctx.notes:
                ctx.notes.append(note)
            continue
        return [
            int(h.chunk_id) for h in hits if h.chunk_id.isdigit() and int(h.chunk_id) != chunk.pk
        ]
    return []


def _prepare_chunk(ctx: _RunContext, chunk: Chunk) -> ChunkInput:
    """Everything the pipeline needs for one chunk, read on this (the database) thread."""
    hard = _hard_negatives(ctx, chunk)
    _text(ctx, [chunk.pk, *hard])

    def text_of(cid: Any) -> str:
        _text(ctx, [cid])
        return ctx.texts.get(cid, "")

    store = ChunkStore(pool=ctx.pool, text_of=text_of)
    base = ChunkInput(id=chunk.pk, text=chunk.text, title=chunk.title, hard_negatives=tuple(hard))
    plans: list[ContextPlan[Any]] = [
        plan_row(base, i, config=ctx.cfg, store=store, seed=ctx.cfg.seed)
        for i in range(ctx.cfg.questions_per_chunk)
    ]
    ids = {cid for plan in plans for cid in plan.chunk_ids} | {chunk.pk}
    _text(ctx, ids)
    return ChunkInput(
        id=chunk.pk,
        text=chunk.text,
        title=chunk.title,
        hard_negatives=tuple(hard),
        plans=tuple(plans),
        texts={cid: ctx.texts[cid] for cid in ids},
    )


def _save_unit(ctx: _RunContext, unit: GenerationUnit, result: ChunkResult, elapsed: float) -> None:
    """Save one finished chunk atomically; a unit already done (a duplicate run) is skipped."""
    cost = 0.0
    for call in result.calls:
        price_in, price_out = ctx.prices.get(call.role, (0.0, 0.0))
        cost += call.prompt_tokens / 1000 * price_in + call.completion_tokens / 1000 * price_out
    chunk = unit.chunk
    assert chunk is not None
    split = ctx.splits.get(chunk.document_id, "train")
    # Surface per-chunk notes (e.g. a chunk truncated for the teacher) on the job, bounded.
    for note in result.notes:
        if len(ctx.notes) < 50:
            ctx.notes.append(f"chunk {chunk.pk} ({chunk.document.name}#{chunk.ordinal}): {note}")
    try:
        with transaction.atomic():
            _save_unit_rows(ctx, unit, result, elapsed, chunk, split, cost)
    except IntegrityError:
        # Another worker saved this chunk first (two runs of one job): its rows stand.
        log.warning(
            "generation job %s: chunk %s was already saved by another run", ctx.job.pk, chunk.pk
        )


def _save_unit_rows(
    ctx: _RunContext,
    unit: GenerationUnit,
    result: ChunkResult,
    elapsed: float,
    chunk: Chunk,
    split: str,
    cost: float,
) -> int:
    """The body of :func:`_save_unit`, inside its transaction; returns the rejected count."""
    rejected = 0
    locked = GenerationUnit.objects.select_for_update().get(pk=unit.pk)
    if locked.state == GenerationUnit.State.DONE:
        return 0
    pairs = []
    for row in result.rows:
        status = QAPair.Status.REJECTED if row.auto_reject_reason else QAPair.Status.PENDING
        rejected += status == QAPair.Status.REJECTED
        ids = [int(c) for c in row.context_ids]  # type: ignore[call-overload]
        _text(ctx, ids)
        pairs.append(
            QAPair(
                kb=ctx.kb,
                job=ctx.job,
                question_index=row.question_index,
                oracle_chunk_id=chunk.pk,
                document_id=chunk.document_id,
                question=row.question,
                cot_answer=row.cot_answer,
                final_answer=row.final_answer,
                context_chunk_ids=ids,
                context_texts=[ctx.texts.get(i, "") for i in ids],
                context_titles=[ctx.titles.get(i, "") for i in ids],
                oracle_index=row.oracle_index,
                oracle_text=chunk.text,
                refusal=row.refusal,
                split=split,
                status=status,
                auto_reject_reason=row.auto_reject_reason,
                judge_score=row.judge_score,
                judge_reason=row.judge_reason,
                quote_status=row.quote_status,
                quote_checks=row.quote_checks,
                parsed_ok=row.parsed_ok,
                notes=row.notes,
                source=QAPair.Source.GENERATED,
            )
        )
    QAPair.objects.bulk_create(pairs)
    ModelCall.objects.bulk_create(
        [
            ModelCall(
                job=ctx.job,
                unit=unit,
                role=c.role,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                latency_s=c.latency_s,
                error=c.error[:2000],
            )
            for c in result.calls
        ]
    )
    failed = bool(result.error)
    GenerationUnit.objects.filter(pk=unit.pk).update(
        state=GenerationUnit.State.FAILED if failed else GenerationUnit.State.DONE,
        attempts=F("attempts") + 1,
        rows=len(pairs),
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        error=result.error,
        notes=result.notes,
        finished_at=timezone.now(),
    )
    was_failed = locked.state == GenerationUnit.State.FAILED
    GenerationJob.objects.filter(pk=ctx.job.pk).update(
        chunks_done=F("chunks_done") + (0 if failed else 1),
        chunks_failed=F("chunks_failed") + (1 if failed else 0) - (1 if was_failed else 0),
        rows=F("rows") + len(pairs),
        rows_rejected=F("rows_rejected") + rejected,
        tokens_in=F("tokens_in") + result.tokens_in,
        tokens_out=F("tokens_out") + result.tokens_out,
        calls=F("calls") + len(result.calls),
        cost=F("cost") + cost,
        run_seconds=F("run_seconds") + elapsed,
        heartbeat_at=timezone.now(),
    )
    return rejected


# ------------------------------------------------------------------------------ review


def _snapshot(pair: QAPair) -> dict[str, Any]:
    return {f: getattr(pair, f) for f in REVIEW_FIELDS} | {"judge_score": pair.judge_score}


def _record(pair: QAPair, user: Any, action: str, before: dict[str, Any], note: str = "") -> None:
    ReviewEvent.objects.create(
        pair=pair,
        user=user if getattr(user, "pk", None) else None,
        action=action,
        before=before,
        after=_snapshot(pair),
        note=note[:300],
    )


def reverify_quotes(pair: QAPair) -> None:
    """Recompute the answer's parts and quote checks (after an edit)."""
    parsed = parse_answer(pair.cot_answer)
    evidence: dict[str, str]
    if pair.refusal or not pair.oracle_text:
        # A refusal explains what the (distractor-only) context says: quotes come from it.
        evidence = {
            str(i if i is not None else f"ctx{n}"): t
            for n, (i, t) in enumerate(
                zip(pair.context_chunk_ids, pair.context_texts, strict=False)
            )
        }
    else:
        # Otherwise quotes must come from the oracle, even when a row's context omits it
        # (RAFT's p < 1 rows), exactly as generation checks them.
        evidence = {str(pair.oracle_chunk_id or "oracle"): pair.oracle_text}
    checks = verify_quotes(parsed.quotes, evidence) if evidence else []
    pair.quote_checks = [c.as_dict() for c in checks]
    pair.quote_status = (
        "none" if not checks else "verified" if all(c.verified for c in checks) else "unverified"
    )
    pair.parsed_ok = parsed.parsed_ok
    if parsed.final:
        pair.final_answer = parsed.final


def qa_pair_update(
    *,
    pair_id: int,
    user: Any,
    version: int,
    action: str,
    question: str | None = None,
    cot_answer: str | None = None,
    final_answer: str | None = None,
    split: str | None = None,
    note: str = "",
) -> QAPair:
    """Approve, reject or edit one pair under an optimistic lock on ``version``.

    Raises :class:`ConflictError` when someone else changed it first (nothing is written).
    """
    if action not in ("approve", "reject", "edit", "reset"):
        raise QAError(f"unknown action {action!r}")
    with transaction.atomic():
        pair = QAPair.objects.select_for_update().get(pk=pair_id)
        if pair.version != version:
            raise ConflictError()
        before = _snapshot(pair)
        if action == "edit" or any(v is not None for v in (question, cot_answer, final_answer)):
            if question is not None:
                if not question.strip():
                    raise QAError("the question cannot be empty")
                pair.question = question.strip()
            if cot_answer is not None:
                pair.cot_answer = cot_answer.strip()
            if final_answer is not None and final_answer.strip():
                parsed = parse_answer(pair.cot_answer)
                if parsed.final != final_answer.strip():
                    pair.cot_answer = format_answer(parsed.reasoning, final_answer.strip())
            reverify_quotes(pair)
        if split is not None:
            if split not in ("train", "eval"):
                raise QAError("split must be train or eval")
            pair.split = split
        if action == "approve":
            pair.status = QAPair.Status.APPROVED
        elif action == "reject":
            pair.status = QAPair.Status.REJECTED
        elif action == "reset":
            pair.status = QAPair.Status.PENDING
        pair.version = version + 1
        pair.reviewed_by = user if getattr(user, "pk", None) else None
        pair.reviewed_at = timezone.now()
        # The conditional update is the lock that also holds on databases without row locks.
        changed = QAPair.objects.filter(pk=pair.pk, version=version).update(
            question=pair.question,
            cot_answer=pair.cot_answer,
            final_answer=pair.final_answer,
            quote_checks=pair.quote_checks,
            quote_status=pair.quote_status,
            parsed_ok=pair.parsed_ok,
            split=pair.split,
            status=pair.status,
            version=pair.version,
            reviewed_by=pair.reviewed_by,
            reviewed_at=pair.reviewed_at,
            updated_at=timezone.now(),
        )
        if not changed:
            raise ConflictError()
        _record(pair, user, action, before, note)
    return pair


@dataclass(frozen=True)
class PairFilter:
    status: str = ""
    min_score: int | None = None
    max_score: int | None = None
    unscored: bool = False
    quote_status: str = ""
    document_id: int | None = None
    split: str = ""
    source: str = ""
    job_id: int | None = None
    q: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PairFilter:
        def num(name: str) -> int | None:
            raw = str(params.get(name) or "").strip()
            return int(raw) if raw.lstrip("-").isdigit() else None

        def choice(name: str, options: Sequence[str]) -> str:
            raw = str(params.get(name) or "").strip()
            return raw if raw in options else ""

        return cls(
            status=choice("status", ("pending", "approved", "rejected")),
            min_score=num("min_score"),
            max_score=num("max_score"),
            unscored=str(params.get("unscored") or "") in ("1", "true", "on"),
            quote_status=choice("quote", ("verified", "unverified", "none")),
            document_id=num("document"),
            split=choice("split", ("train", "eval")),
            source=choice("source", ("generated", "imported", "chat_feedback")),
            job_id=num("job"),
            q=str(params.get("q") or "").strip()[:200],
        )

    def apply(self, qs: QuerySet[QAPair]) -> QuerySet[QAPair]:
        if self.status:
            qs = qs.filter(status=self.status)
        if self.min_score is not None:
            qs = qs.filter(judge_score__gte=self.min_score)
        if self.max_score is not None:
            qs = qs.filter(judge_score__lte=self.max_score)
        if self.unscored:
            qs = qs.filter(judge_score__isnull=True)
        if self.quote_status:
            qs = qs.filter(quote_status=self.quote_status)
        if self.document_id is not None:
            qs = qs.filter(document_id=self.document_id)
        if self.split:
            qs = qs.filter(split=self.split)
        if self.source:
            qs = qs.filter(source=self.source)
        if self.job_id is not None:
            qs = qs.filter(job_id=self.job_id)
        if self.q:
            qs = qs.filter(Q(question__icontains=self.q) | Q(final_answer__icontains=self.q))
        return qs


def qa_pairs_bulk(*, kb: KnowledgeBase, user: Any, filters: PairFilter, action: str) -> int:
    """Approve / reject / reset every pair matching ``filters``; each change is recorded."""
    target = {
        "approve": QAPair.Status.APPROVED,
        "reject": QAPair.Status.REJECTED,
        "reset": QAPair.Status.PENDING,
    }.get(action)
    if target is None:
        raise QAError(f"unknown bulk action {action!r}")
    count = 0
    qs = filters.apply(QAPair.objects.filter(kb=kb)).exclude(status=target)
    for pk in list(qs.values_list("pk", flat=True)):
        with transaction.atomic():
            pair = QAPair.objects.select_for_update().get(pk=pk)
            if pair.status == target:
                continue
            before = _snapshot(pair)
            pair.status = target
            pair.version += 1
            pair.reviewed_by = user if getattr(user, "pk", None) else None
            pair.reviewed_at = timezone.now()
            pair.save(
                update_fields=["status", "version", "reviewed_by", "reviewed_at", "updated_at"]
            )
            _record(pair, user, f"bulk_{action}", before)
            count += 1
    return count


# ------------------------------------------------------------------------------ agreement


def qa_agreement(*, kb: KnowledgeBase, threshold: int = 3) -> dict[str, Any]:
    """Judge vs humans on pairs a person decided (approved/rejected by a reviewer) and the
    judge scored: confusion matrix, Cohen's kappa, score histograms, best threshold."""
    from raftweb.metrics import best_threshold, cohen_kappa, confusion

    decided = list(
        QAPair.objects.filter(
            kb=kb,
            reviewed_by__isnull=False,
            judge_score__isnull=False,
            status__in=[QAPair.Status.APPROVED, QAPair.Status.REJECTED],
        ).values_list("judge_score", "status")
    )
    scores = [s for s, _ in decided]
    human = [st == QAPair.Status.APPROVED for _, st in decided]
    judge = [s >= threshold for s in scores]
    histogram = {label: [0] * 5 for label in ("approved", "rejected")}
    for score, approved in zip(scores, human, strict=True):
        histogram["approved" if approved else "rejected"][score - 1] += 1
    best = best_threshold(scores, human)
    return {
        "n": len(decided),
        "threshold": threshold,
        # rows: human approve/reject; columns: judge approve/reject
        "confusion": confusion(human, judge, [True, False]),
        "kappa": cohen_kappa(human, judge),
        "agreement": (sum(a == b for a, b in zip(human, judge, strict=True)) / len(human))
        if human
        else None,
        "histogram": histogram,
        "best_threshold": best.threshold if best else None,
        "best_agreement": best.agreement if best else None,
        "best_kappa": best.kappa if best else None,
    }


# ------------------------------------------------------------------------------ export


def pair_to_row(pair: QAPair) -> RaftRow:
    """A stored pair as the engine's :class:`RaftRow` (what every exporter takes)."""
    return RaftRow(
        id=f"{pair.kb.slug if hasattr(pair, 'kb') else 'kb'}-{pair.pk}",
        question=pair.question,
        cot_answer=pair.cot_answer,
        final_answer=pair.final_answer,
        context_ids=[str(c) for c in pair.context_chunk_ids],
        context_texts=list(pair.context_texts),
        context_titles=list(pair.context_titles),
        oracle_index=pair.oracle_index,
        split=pair.split,
        type="general",
        oracle_text=pair.oracle_text,
        oracle_id=str(pair.oracle_chunk_id) if pair.oracle_chunk_id else None,
        refusal=pair.refusal,
    )


def qa_export_queryset(
    *, kb: KnowledgeBase, split: str = "train", status: str = "approved"
) -> QuerySet[QAPair]:
    if split not in ("train", "eval", "all"):
        raise QAError("split must be train, eval or all")
    if status not in ("approved", "all"):
        raise QAError("status must be approved or all")
    qs = QAPair.objects.filter(kb=kb).select_related("kb").order_by("id")
    if split != "all":
        qs = qs.filter(split=split)
    if status == "approved":
        qs = qs.filter(status=QAPair.Status.APPROVED)
    return qs


def qa_rows(
    *, kb: KnowledgeBase, split: str = "train", status: str = "approved"
) -> Iterator[RaftRow]:
    """The dataset as RaftRows, for training and evaluation. ``split="train"`` (the default)
    never yields an eval-split pair."""
    for pair in qa_export_queryset(kb=kb, split=split, status=status).iterator(chunk_size=500):
        yield pair_to_row(pair)


def qa_export_lines(
    *,
    kb: KnowledgeBase,
    fmt: str,
    split: str = "train",
    status: str = "approved",
    system: str | None = None,
) -> tuple[int, Iterator[str]]:
    """(row count, JSONL lines). Raises QAError(code="empty") when nothing matches, so callers
    never write an empty file."""
    from raftweb.raft.formats import EXPORTERS

    if fmt not in EXPORTERS:
        raise QAError(f"unknown format {fmt!r}; choose one of {', '.join(sorted(EXPORTERS))}")
    qs = qa_export_queryset(kb=kb, split=split, status=status)
    count = qs.count()
    if not count:
        what = "approved " if status == "approved" else ""
        where = "" if split == "all" else f" in the {split} split"
        raise QAError(
            f"Nothing to export: knowledge base '{kb.slug}' has no {what}Q&A pairs{where}.",
            code="empty",
            status=404,
        )
    rows = (pair_to_row(p) for p in qs.iterator(chunk_size=500))
    return count, export_lines(rows, fmt, system=system, prompts=kb_prompts(kb))


# ------------------------------------------------------------------------------ import


def _doc_matches(kb: KnowledgeBase, names: Sequence[str]) -> list[int]:
    wanted = {n.strip().lower() for n in names if n.strip()}
    out = []
    for pk, name in Document.objects.filter(kb=kb).values_list("pk", "name"):
        low = name.lower()
        stem = low.rsplit(".", 1)[0] if "." in low else low
        if low in wanted or stem in wanted:
            out.append(pk)
    return out


def qa_import(
    *,
    kb: KnowledgeBase,
    data: bytes | str,
    filename: str = "",
    user: Any = None,
    status: str = "pending",
    split: str | None = None,
) -> dict[str, Any]:
    """Import pairs; returns ``{"imported": n, "skipped": [{"line": k, "error": ...}]}``.

    The oracle chunk comes from the gold documents (the chunk that best matches the question
    and answer, or that the quotes were taken from) or, without gold, from the quotes / the
    given oracle text across the whole KB. Bad lines are skipped with their line numbers.
    """
    if status not in ("pending", "approved"):
        raise QAError("status must be pending or approved")
    if split not in (None, "train", "eval"):
        raise QAError("split must be train or eval")
    parsed = parse_import(data, filename=filename)
    skipped = [e.as_dict() for e in parsed.errors]
    doc_splits = kb_document_splits(kb=kb, seed=0, eval_share=0.1) if split is None else {}
    imported = 0
    all_chunks: dict[int, str] | None = None
    for rec in parsed.records:
        candidates: dict[int, str]
        if rec.gold:
            doc_ids = _doc_matches(kb, rec.gold)
            if not doc_ids:
                skipped.append(
                    {"line": rec.line, "error": f"gold document not found: {', '.join(rec.gold)}"}
                )
                continue
            candidates = dict(
                Chunk.objects.filter(document_id__in=doc_ids).values_list("pk", "text")
            )
        else:
            if all_chunks is None:
                all_chunks = dict(Chunk.objects.filter(document__kb=kb).values_list("pk", "text"))
            candidates = all_chunks
        oracle_id = (
            best_chunk(
                question=rec.question,
                answer=rec.final_answer,
                quotes=rec.quotes,
                candidates=candidates,
                oracle_text=rec.oracle_text,
            )
            if candidates
            else None
        )
        if oracle_id is None and (rec.gold or rec.quotes or rec.oracle_text):
            skipped.append(
                {"line": rec.line, "error": "no chunk of the knowledge base matches this pair"}
            )
            continue
        chunk = (
            Chunk.objects.select_related("document").filter(pk=oracle_id).first()
            if oracle_id
            else None
        )
        pair = QAPair(
            kb=kb,
            question=rec.question,
            cot_answer=rec.cot_answer,
            final_answer=rec.final_answer,
            oracle_chunk=chunk,
            document=chunk.document if chunk else None,
            oracle_text=chunk.text if chunk else rec.oracle_text,
            context_chunk_ids=[chunk.pk] if chunk else [],
            context_texts=[chunk.text] if chunk else [],
            context_titles=[chunk.title or chunk.document.name] if chunk else [],
            oracle_index=0 if chunk else None,
            split=split or (doc_splits.get(chunk.document_id, "train") if chunk else "train"),
            status=status,
            source=QAPair.Source.IMPORTED,
            reviewed_by=user if (status == "approved" and getattr(user, "pk", None)) else None,
            notes=[f"imported from {filename or 'upload'} line {rec.line} ({rec.source_format})"],
        )
        if rec.context_texts and chunk is not None:
            # Keep the imported context (RAFT hf/chat rows), with the oracle's position.
            texts = list(rec.context_texts)
            idx = next((i for i, t in enumerate(texts) if t.strip() == chunk.text.strip()), None)
            pair.context_texts = texts
            pair.context_chunk_ids = [chunk.pk if i == idx else None for i in range(len(texts))]
            pair.context_titles = ["" for _ in texts]
            pair.oracle_index = idx
        reverify_quotes(pair)
        pair.final_answer = rec.final_answer
        try:
            with transaction.atomic():
                pair.save()
                _record(pair, user, "import", {})
        except IntegrityError as exc:
            skipped.append({"line": rec.line, "error": f"could not save: {exc}"})
            continue
        imported += 1
    skipped.sort(key=lambda e: e["line"])
    return {"imported": imported, "skipped": skipped}
