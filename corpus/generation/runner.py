"""Worker-side generation runner.

Generation runs the engine pipeline (:mod:`raftweb.raft.pipeline`) on a private event-loop thread
while this thread does all database work: it prepares each chunk (hard negatives from the corpus
retrieval service, contexts pre-assembled from the job seed), then saves each finished chunk - its
rows, its model calls and its unit state - in one transaction. A unit that is done is never
redone, so a killed worker, restarted, finishes the job with no duplicate and no lost row. A worker
told to stop (SIGTERM to ``run_huey``, see :func:`generation_runs_stop`) hands its job back within
seconds instead: finished chunks saved, the job resumable at once. It never enqueues.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from corpus.generation.prompts import kb_prompts
from corpus.generation.selectors import ACTIVE_STATES, STALE_AFTER
from corpus.knowledge.indexes import CorpusError
from corpus.knowledge.search import kb_search_many
from corpus.knowledge.splits import kb_document_splits
from corpus.models import (
    Chunk,
    Document,
    GenerationJob,
    GenerationUnit,
    KnowledgeBase,
    ModelCall,
    QAPair,
)
from raftweb.core.services import profile_prices, profile_spec
from raftweb.llm import LLMError, get_backend
from raftweb.raft.context import ContextPlan
from raftweb.raft.pipeline import (
    ChunkInput,
    ChunkResult,
    ChunkStore,
    GenerationConfig,
    PipelineRunner,
    plan_row,
)
from raftweb.shutdown import StopGate

log = logging.getLogger(__name__)


CANCEL_POLL_S = 0.5

# How long a stopping worker waits for its runs to hand their jobs back (`serve` and service
# managers send SIGKILL some seconds after SIGTERM: `serve` after 10).
SHUTDOWN_GRACE_S = 5.0

# Set when this worker process is shutting down (SIGTERM to `run_huey`; see corpus.tasks): each
# run stops submitting chunks, abandons those in flight (their units stay pending), saves the
# ones that finished, and hands its job back at once instead of being killed holding it.
_gate = StopGate()


def generation_runs_stop(*, timeout: float = SHUTDOWN_GRACE_S) -> bool:
    """Ask every generation run in this process to stop and wait, at most ``timeout`` seconds,
    until they have handed their jobs back. True if none is left running."""
    return _gate.stop(timeout=timeout)


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


_CLAIMABLE_STATES = (GenerationJob.Status.QUEUED, GenerationJob.Status.FAILED)


def generation_job_claim(*, job_id: int) -> bool:
    """Take a job for this worker with one conditional update that must change exactly one row.

    A job can be claimed when it waits (queued, or failed and run again) or when its worker went
    silent (stale heartbeat). Two workers racing for one job - the original and a stale-job
    resume, or a job enqueued twice - both try; the database lets exactly one through, and the
    other backs off, so the teacher is never paid twice for the same chunk."""
    now = timezone.now()
    stale = Q(status__in=ACTIVE_STATES) & (
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - STALE_AFTER)
    )
    claimed = (
        GenerationJob.objects.filter(pk=job_id)
        .filter(Q(status__in=_CLAIMABLE_STATES) | stale)
        .update(
            status=GenerationJob.Status.RUNNING,
            heartbeat_at=now,
            started_at=Coalesce("started_at", Value(now)),
        )
    )
    return claimed == 1


def generation_job_run(*, job_id: int) -> GenerationJob:
    """Run (or resume) a job to the end. Safe to call again after any interruption, and from two
    workers at once: only the one that claims the job runs it."""
    job = GenerationJob.objects.select_related("kb").get(pk=job_id)
    if job.status in (GenerationJob.Status.FINISHED, GenerationJob.Status.CANCELLED):
        return job
    if not generation_job_claim(job_id=job.pk):
        log.info("generation job %s is being run by another worker; backing off", job.pk)
        return job
    with _gate.tracked():
        return _run_claimed(job)


def _run_claimed(job: GenerationJob) -> GenerationJob:
    job.refresh_from_db()
    if job.cancel_requested:
        return _finish(job, GenerationJob.Status.CANCELLED)
    cfg = GenerationConfig.from_dict(job.config)
    units = deque(
        job.units.exclude(state=GenerationUnit.State.DONE)
        .filter(chunk__isnull=False)
        .select_related("chunk", "chunk__document")
        .order_by("id")
    )
    if not units:
        return _finish(job, None)

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
    refill = max(1, min(16, cfg.max_concurrency))  # never below max_concurrency chunks in flight
    closed = False
    stopped = False
    last_poll = time.monotonic()
    segment_start = time.monotonic()
    status: str | None = None
    try:
        while units or inflight:
            if _gate.stopping:
                stopped = True
                break
            if units and len(inflight) <= window - refill:
                # Refill in groups: their hard-negative searches run as one batch instead of
                # one chunk at a time.
                batch = [units.popleft() for _ in range(min(len(units), window - len(inflight)))]
                hard = _hard_negatives_many(ctx, [u.chunk for u in batch])
                for unit in batch:
                    prepared = _prepare_chunk(ctx, unit.chunk, hard[unit.chunk_id])
                    runner.submit(_resumed(unit, prepared))
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
    if stopped:
        _hand_back(ctx, runner, inflight, segment_start)
        job.refresh_from_db()
        return job
    if ctx.notes:
        GenerationJob.objects.filter(pk=job.pk).update(
            notes=list(dict.fromkeys((job.notes or []) + ctx.notes))
        )
    job.refresh_from_db()
    return _finish(job, status)


def _hand_back(
    ctx: _RunContext,
    runner: PipelineRunner,
    inflight: dict[int, GenerationUnit],
    segment_start: float,
) -> None:
    """The worker is stopping: save the chunks that finished before the pipeline was cancelled
    (it has been joined, so nothing more arrives), then leave the job resumable at once - still
    active, with no heartbeat, which reads as "its worker is gone": the Resume button is
    accepted without waiting for the heartbeat to go stale, and any worker's stale-job resume
    takes it over. Abandoned chunks stay pending and are redone by the next run."""
    job = ctx.job
    while (result := runner.get(timeout=0)) is not None:
        unit = inflight.pop(int(result.chunk_id), None)  # type: ignore[arg-type]
        if unit is not None:
            _save_unit(ctx, unit, result, time.monotonic() - segment_start)
            segment_start = time.monotonic()
    done = job.units.filter(state=GenerationUnit.State.DONE).count()
    note = (
        f"the worker stopped with {done} of {job.chunks_total} chunks done; "
        "resume the job to finish it (a running worker also resumes it within minutes)"
    )
    GenerationJob.objects.filter(pk=job.pk, status__in=ACTIVE_STATES).update(
        heartbeat_at=None,
        notes=list(dict.fromkeys((job.notes or []) + ctx.notes + [note])),
    )
    log.info("generation job %s handed back: %s", job.pk, note)


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


def _hard_negatives_many(ctx: _RunContext, chunks: list[Chunk]) -> dict[int, list[int]]:
    """Hard-negative candidates for several chunks: one batched search - each chunk's stored
    vector is its dense query (no model run), one vector-store call for all, its text the BM25
    query - falling back to BM25 alone when that mode is unavailable."""
    cfg = ctx.cfg
    if cfg.hard_negative_share <= 0 or cfg.num_distractors <= 0 or not chunks:
        return {c.pk: [] for c in chunks}

    k = cfg.num_distractors * 2 + 3
    modes = [cfg.hard_negative_mode] + (["bm25"] if cfg.hard_negative_mode != "bm25" else [])
    for mode in modes:
        try:
            # The chunks' own stored vectors are the dense queries (no model run per chunk).
            found = kb_search_many(
                kb=ctx.kb,
                queries=[c.text[:2000] for c in chunks],
                mode=mode,
                k=k,
                like_chunk_ids=[c.pk for c in chunks],
            )
        except (CorpusError, Exception) as exc:  # noqa: BLE001 - fall back, never fail the chunk
            note = f"hard negatives: {mode} search unavailable ({exc}); falling back"
            if note not in ctx.notes:
                ctx.notes.append(note)
            continue
        return {
            chunk.pk: [
                int(h.chunk_id)
                for h in hits
                if h.chunk_id.isdigit() and int(h.chunk_id) != chunk.pk
            ]
            for chunk, hits in zip(chunks, found, strict=True)
        }
    return {c.pk: [] for c in chunks}


def _prepare_chunk(ctx: _RunContext, chunk: Chunk, hard: list[int]) -> ChunkInput:
    """Everything the pipeline needs for one chunk, read on this (the database) thread;
    ``hard``: its hard-negative candidates (see :func:`_hard_negatives_many`)."""
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


def _answered(unit: GenerationUnit) -> set[int]:
    return set(
        QAPair.objects.filter(
            job_id=unit.job_id, oracle_chunk_id=unit.chunk_id, question_index__isnull=False
        ).values_list("question_index", flat=True)
    )


def _resumed(unit: GenerationUnit, chunk: ChunkInput) -> ChunkInput:
    """A unit that failed part-way keeps its questions and rows: the pipeline answers only the
    questions that have no row yet, without asking the teacher for questions again."""
    if not unit.questions:
        return chunk
    return replace(chunk, questions=tuple(unit.questions), answered=frozenset(_answered(unit)))


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
    answered = _answered(locked)
    pairs = []
    for row in result.rows:
        if row.question_index in answered:
            continue  # saved by an earlier attempt of this unit
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
        rows=len(answered) + len(pairs),
        questions=result.questions or locked.questions,
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
