"""The RAFT generation pipeline for one chunk, and a runner that drives many chunks with
bounded concurrency on its own event loop (engine: no Django).

Per chunk: the teacher writes questions (parsed, near-duplicates dropped); per question the
context is assembled (seeded by job seed + chunk + question index, so a resumed job builds the
same rows), the teacher writes a chain-of-thought answer (or, for a refusal row, explains why
the distractors lack it), quotes are verified, and the judge scores the row. Each chunk yields
one :class:`ChunkResult`, which the caller persists atomically — the unit of idempotency.

:class:`PipelineRunner` runs the event loop in a background thread so the caller's thread
(a Huey worker with Django's ORM, or a benchmark) submits chunks and consumes results
synchronously: all database work stays on the caller's thread and connection.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from raftweb.llm.base import ChatBackend, ChatMessage, Completion, GenerationParams, LLMError
from raftweb.raft.context import ContextPlan, assemble_context, row_rng
from raftweb.raft.evidence import check_row_quotes
from raftweb.raft.judge import JudgeVerdict, judge_messages, parse_judge
from raftweb.raft.prompts import (
    DEFAULT_PROMPTS,
    PromptSet,
    cot_answer_messages,
    questions_messages,
    refusal_messages,
)
from raftweb.raft.questions import parse_questions
from raftweb.raft.quotes import DEFAULT_QUOTE_THRESHOLD, QUOTE_THRESHOLD_BOUNDS
from raftweb.typedconfig import TypedConfig, knob

CHARS_PER_TOKEN = 4  # rough, tokenizer-free estimate; only used to keep prompts in context
PROMPT_OVERHEAD_TOKENS = 400

REASON_UNPARSEABLE = "unparseable"
REASON_QUOTE = "quote not found"
REASON_REFUSAL = "refusal expected"
REASON_EMPTY = "empty answer"


_LO, _HI = QUOTE_THRESHOLD_BOUNDS
_PROFILES = ("teacher", "judge", "student")


@dataclass(frozen=True)
class GenerationConfig(TypedConfig):
    """Per-job knobs; defaults from DESIGN.md (p=0.8, 3 distractors, max_new_tokens >= 800).

    Declared once: the job form, the ``raft_generate`` flags and the API schema are generated
    from these fields (:mod:`raftweb.typedconfig`)."""

    setting_noun: ClassVar[str] = "generation setting"

    questions_per_chunk: int = knob(3, min=1, max=50, label="Questions per chunk")
    num_distractors: int = knob(
        3, min=0, max=20, label="Distractors per row", cli=("--distractors",)
    )
    p: float = knob(
        0.8,
        min=0.0,
        max=1.0,
        label="p (oracle in context)",
        help="Probability that a row's context holds the oracle chunk (RAFT's P).",
    )
    hard_negative_share: float = knob(
        0.5,
        min=0.0,
        max=1.0,
        label="Share of hard-negative distractors",
        help="Distractors retrieved as close-but-wrong chunks rather than drawn at random.",
    )
    hard_negative_mode: str = knob(
        "hybrid", choices=("hybrid", "dense", "bm25"), label="Hard negatives retrieved by"
    )
    refusal_share: float = knob(
        0.5, min=0.0, max=1.0, label="Share of refusal rows among rows without the oracle"
    )
    max_concurrency: int = knob(8, min=1, max=256, label="Concurrent model calls")
    max_new_tokens: int = knob(
        1000,
        min=16,
        max=32768,
        label="Answer max new tokens",
        help="Chains of thought are cut below ~800.",
    )
    question_max_tokens: int = knob(400, min=16, max=32768, advanced=True)
    judge_max_tokens: int = knob(300, min=8, max=32768, advanced=True)
    judge_enabled: bool = knob(True, label="Judge every row", cli_false="--no-judge")
    judge_threshold: int = knob(
        3, min=1, max=5, label="Judge threshold", help="Rows scored below are rejected."
    )
    reject_unverified_quotes: bool = knob(
        True, label="Reject rows whose quotes are not found in the oracle"
    )
    quote_threshold: float = knob(
        DEFAULT_QUOTE_THRESHOLD,
        min=_LO,
        max=_HI,
        label="Quote match threshold",
        advanced=True,
        help="Fuzzy-match ratio a quote needs to count as found.",
    )
    teacher_context_tokens: int = knob(8192, min=256, max=10_000_000, advanced=True)
    question_temperature: float = knob(0.7, min=0.0, max=2.0, advanced=True)
    seed: int = knob(0, label="Seed")
    eval_share: float = knob(0.1, min=0.0, max=0.9, label="Share of documents held out for eval")
    limit_chunks: int | None = knob(None, min=1, label="Only the first N chunks")
    document_ids: tuple[int, ...] = knob(
        (), label="Only these document ids", help="Comma separated; empty means all."
    )
    teacher_profile: str = knob("teacher", choices=_PROFILES, label="Teacher profile")
    judge_profile: str = knob("judge", choices=_PROFILES, label="Judge profile")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GenerationConfig:
        data = dict(data or {})
        # 0 or "" has always meant "no limit" for limit_chunks (forms and scripts send it).
        if data.get("limit_chunks") in (0, "0", ""):
            data["limit_chunks"] = None
        return super().from_dict(data)


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """One chunk to generate from. A caller that owns a database passes ``plans`` (contexts
    pre-assembled for question indices 0..n-1) and ``texts`` (every context chunk's text), so
    the pipeline thread never needs the database; otherwise the :class:`ChunkStore` is used."""

    id: Hashable
    text: str
    title: str = ""
    hard_negatives: tuple[Hashable, ...] = ()
    plans: tuple[ContextPlan[Any], ...] = ()
    texts: Mapping[Hashable, str] = field(default_factory=dict)
    # A resumed chunk: the questions the teacher already wrote (no new question call) and
    # the indices that already have a row (not answered again).
    questions: tuple[str, ...] = ()
    answered: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class CallRecord:
    role: str  # "teacher" | "judge"
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error: str = ""


@dataclass(slots=True)
class GeneratedRow:
    question_index: int
    question: str
    cot_answer: str
    final_answer: str
    context_ids: list[Hashable]
    oracle_index: int | None
    refusal: bool
    parsed_ok: bool
    quote_checks: list[dict[str, Any]]
    quote_status: str  # verified | unverified | none
    judge_score: int | None = None
    judge_reason: str = ""
    auto_reject_reason: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ChunkResult:
    chunk_id: Hashable
    questions: list[str] = field(default_factory=list)
    rows: list[GeneratedRow] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_in(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def tokens_out(self) -> int:
        return sum(c.completion_tokens for c in self.calls)


@dataclass(frozen=True, slots=True)
class ChunkStore:
    """Where context documents come from: every candidate chunk id and a text lookup."""

    pool: Sequence[Hashable]
    text_of: Callable[[Hashable], str]


class _ChunkFailed(Exception):
    pass


def plan_row(
    chunk: ChunkInput, index: int, *, config: GenerationConfig, store: ChunkStore, seed: int
) -> ContextPlan[Any]:
    """The context of question ``index`` of ``chunk`` — a pure function of the seed and the
    row's identity, so it can be computed ahead (by the job owner) or on demand."""
    return assemble_context(
        oracle_id=chunk.id,
        oracle_text=chunk.text,
        hard_negatives=chunk.hard_negatives,
        pool=store.pool,
        text_of=store.text_of,
        num_distractors=config.num_distractors,
        p=config.p,
        hard_share=config.hard_negative_share,
        refusal_share=config.refusal_share,
        rng=row_rng(seed, chunk.id, index),
    )


class ChunkGenerator:
    """Generates one chunk's rows; model calls are bounded by a shared semaphore."""

    def __init__(
        self,
        *,
        teacher: ChatBackend,
        judge: ChatBackend | None,
        config: GenerationConfig,
        store: ChunkStore | None = None,
        prompts: PromptSet = DEFAULT_PROMPTS,
        seed: int | None = None,
        call_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.teacher = teacher
        self.judge = judge if config.judge_enabled else None
        self.config = config
        self.store = store
        self.prompts = prompts
        self.seed = config.seed if seed is None else seed
        self.slots = call_slots or asyncio.Semaphore(config.max_concurrency)

    # -- calls

    async def _call(
        self,
        backend: ChatBackend,
        role: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        calls: list[CallRecord],
    ) -> Completion:
        async with self.slots:
            start = time.perf_counter()
            try:
                completion = await backend.complete(messages, params)
            except LLMError as exc:
                calls.append(CallRecord(role, 0, 0, time.perf_counter() - start, str(exc)))
                raise
        calls.append(
            CallRecord(
                role,
                completion.usage.prompt_tokens,
                completion.usage.completion_tokens,
                completion.latency_s,
            )
        )
        return completion

    # -- one chunk

    def _fit(self, text: str, budget_tokens: int) -> tuple[str, bool]:
        limit = max(200, budget_tokens * CHARS_PER_TOKEN)
        if len(text) <= limit:
            return text, False
        return text[:limit], True

    async def run(self, chunk: ChunkInput) -> ChunkResult:
        result = ChunkResult(chunk.id)
        cfg = self.config
        budget = cfg.teacher_context_tokens - cfg.max_new_tokens - PROMPT_OVERHEAD_TOKENS
        oracle_text, truncated = self._fit(chunk.text, budget)
        if truncated:
            result.notes.append(
                f"chunk truncated from {len(chunk.text)} to {len(oracle_text)} characters to fit "
                f"the teacher context ({cfg.teacher_context_tokens} tokens)"
            )
        questions = list(chunk.questions) or await self._questions(oracle_text, result)
        if questions is None:
            return result
        result.questions = questions
        if not questions:
            result.notes.append("the teacher returned no usable questions")
            return result
        todo = [(i, q) for i, q in enumerate(questions) if i not in chunk.answered]
        outcomes = await asyncio.gather(
            *(self._row(chunk, oracle_text, i, q, result) for i, q in todo),
            return_exceptions=True,
        )
        # One failed answer must not throw away its siblings: they are kept, and a resumed
        # unit answers only the questions that still have no row.
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for failure in failures:
            if not isinstance(failure, _ChunkFailed):
                raise failure
        result.rows = [o for o in outcomes if isinstance(o, GeneratedRow)]
        if failures:
            result.error = (
                f"{failures[0]} ({len(failures)} of {len(todo)} questions failed; their "
                f"{len(result.rows)} siblings were kept, and resuming the job answers the rest)"
            )
        if truncated:
            for row in result.rows:
                row.notes.append("oracle chunk truncated for the teacher")
        return result

    async def _questions(self, oracle_text: str, result: ChunkResult) -> list[str] | None:
        """The teacher's questions for a chunk; None when the call failed (``result.error``).

        A reply that refuses or apologises instead of asking yields no question: its lines are
        not questions about the document, however they are punctuated.
        """
        cfg = self.config
        try:
            reply = await self._call(
                self.teacher,
                "teacher",
                questions_messages(oracle_text, cfg.questions_per_chunk, prompts=self.prompts),
                GenerationParams(
                    max_tokens=cfg.question_max_tokens,
                    temperature=cfg.question_temperature,
                    seed=self.seed,
                ),
                result.calls,
            )
        except LLMError as exc:
            result.error = f"teacher failed while writing questions: {exc}"
            return None
        return parse_questions(reply.text, limit=cfg.questions_per_chunk)

    async def _row(
        self, chunk: ChunkInput, oracle_text: str, index: int, question: str, result: ChunkResult
    ) -> GeneratedRow:
        cfg = self.config

        def text_of(cid: Hashable) -> str:
            if cid in chunk.texts:
                return chunk.texts[cid]
            if cid == chunk.id:
                return chunk.text
            assert self.store is not None, "no text for a context chunk and no store"
            return self.store.text_of(cid)

        if index < len(chunk.plans):
            plan = chunk.plans[index]
        else:
            assert self.store is not None, "no pre-assembled context and no store"
            plan = plan_row(chunk, index, config=cfg, store=self.store, seed=self.seed)
        params = GenerationParams(max_tokens=cfg.max_new_tokens, temperature=0.0, seed=self.seed)
        budget = cfg.teacher_context_tokens - cfg.max_new_tokens - PROMPT_OVERHEAD_TOKENS
        if plan.refusal:
            per_doc = max(50, budget // max(1, len(plan.chunk_ids)))
            docs = [self._fit(text_of(cid), per_doc)[0] for cid in plan.chunk_ids]
            messages = refusal_messages(question, docs, prompts=self.prompts)
        else:
            messages = cot_answer_messages(question, oracle_text, prompts=self.prompts)
        try:
            completion = await self._call(self.teacher, "teacher", messages, params, result.calls)
        except LLMError as exc:
            raise _ChunkFailed(f"teacher failed while answering: {exc}") from exc
        # The same check a stored row gets when a reviewer edits it (evidence.check_row_quotes),
        # on the full (untruncated) texts a row stores.
        verdict = check_row_quotes(
            cot_answer=completion.text,
            refusal=plan.refusal,
            oracle_id=chunk.id,
            oracle_text=chunk.text,
            context_ids=list(plan.chunk_ids),
            context_texts=[text_of(cid) for cid in plan.chunk_ids],
            threshold=cfg.quote_threshold,
        )
        parsed, quote_status = verdict.parsed, verdict.status
        row = GeneratedRow(
            question_index=index,
            question=question,
            cot_answer=completion.text,
            final_answer=parsed.final or "",
            context_ids=list(plan.chunk_ids),
            oracle_index=plan.oracle_index,
            refusal=plan.refusal,
            parsed_ok=parsed.parsed_ok,
            quote_checks=verdict.check_dicts(),
            quote_status=quote_status,
        )
        if not completion.text.strip():
            row.auto_reject_reason = REASON_EMPTY
            row.parsed_ok = False
        elif not parsed.parsed_ok:
            row.auto_reject_reason = REASON_UNPARSEABLE
        elif plan.refusal and not parsed.refusal:
            row.auto_reject_reason = REASON_REFUSAL
        elif quote_status == "unverified" and cfg.reject_unverified_quotes:
            row.auto_reject_reason = REASON_QUOTE
        if row.auto_reject_reason in (REASON_EMPTY, REASON_UNPARSEABLE) or self.judge is None:
            return row  # judging an answer with no final answer would only waste calls
        judge_doc = "\n\n".join(verdict.evidence.values()) if plan.refusal else oracle_text
        verdict = await self._judge(question, completion.text, judge_doc, result.calls)
        if verdict is None:
            row.judge_reason = row.judge_reason or "judge reply could not be parsed (after a retry)"
        else:
            row.judge_score, row.judge_reason = verdict.score, verdict.reason
            if verdict.score < cfg.judge_threshold and not row.auto_reject_reason:
                row.auto_reject_reason = f"judge score < {cfg.judge_threshold}"
        return row

    async def _judge(
        self, question: str, answer: str, document: str, calls: list[CallRecord]
    ) -> JudgeVerdict | None:
        assert self.judge is not None
        messages = judge_messages(
            question=question, answer=answer, oracle=document, prompts=self.prompts
        )
        params = GenerationParams(max_tokens=self.config.judge_max_tokens, temperature=0.0)
        for _attempt in range(2):  # one retry on an unparseable reply, then unscored
            try:
                reply = await self._call(self.judge, "judge", messages, params, calls)
            except LLMError:
                return None
            verdict = parse_judge(reply.text)
            if verdict is not None:
                return verdict
        return None


_DONE = object()


class PipelineRunner:
    """Runs :class:`ChunkGenerator` over submitted chunks on a private event loop thread.

    ``submit`` / ``close`` / ``get`` / ``cancel`` are called from the owner's thread. At most
    ``max_active_chunks`` chunks are in progress, and at most ``config.max_concurrency`` model
    calls are in flight, so a large job never holds more than a window of partial work.
    """

    def __init__(
        self,
        *,
        teacher: ChatBackend,
        judge: ChatBackend | None,
        config: GenerationConfig,
        store: ChunkStore | None = None,
        prompts: PromptSet = DEFAULT_PROMPTS,
        max_active_chunks: int | None = None,
    ) -> None:
        self._kwargs = dict(
            teacher=teacher, judge=judge, config=config, store=store, prompts=prompts
        )
        self.config = config
        self.max_active = max_active_chunks or max(2, config.max_concurrency * 2)
        self._out: queue.Queue[object] = queue.Queue()
        self._ready = threading.Event()
        self._cancelled = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in: asyncio.Queue[ChunkInput | None] | None = None
        self._thread = threading.Thread(target=self._thread_main, name="raft-pipeline", daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self.finished = False

    # -- owner side

    def start(self) -> PipelineRunner:
        self._thread.start()
        self._ready.wait()
        return self

    def submit(self, chunk: ChunkInput) -> None:
        assert self._loop is not None and self._in is not None
        self._loop.call_soon_threadsafe(self._in.put_nowait, chunk)

    def close(self) -> None:
        """No more chunks will be submitted."""
        assert self._loop is not None and self._in is not None
        self._loop.call_soon_threadsafe(self._in.put_nowait, None)

    def get(self, timeout: float | None = None) -> ChunkResult | None:
        """The next finished chunk; ``None`` on timeout or once everything is done."""
        try:
            item = self._out.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _DONE:
            self.finished = True
            return None
        assert isinstance(item, ChunkResult)
        return item

    def cancel(self) -> None:
        """Stop: chunks in progress are abandoned (their units stay pending)."""
        self._cancelled.set()
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._cancel_tasks)
            except RuntimeError:  # loop already closed
                pass

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- loop side

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._in is not None:
            self._in.put_nowait(None)

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._in = asyncio.Queue()
        self._ready.set()
        generator = ChunkGenerator(**self._kwargs)  # type: ignore[arg-type]
        active = asyncio.Semaphore(self.max_active)
        try:
            while not self._cancelled.is_set():
                chunk = await self._in.get()
                if chunk is None or self._cancelled.is_set():
                    break
                await active.acquire()
                task = asyncio.create_task(self._one(generator, chunk, active))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            # Backends are shared and cached by the registry: their owner closes them.
            self._out.put(_DONE)

    async def _one(
        self, generator: ChunkGenerator, chunk: ChunkInput, active: asyncio.Semaphore
    ) -> None:
        try:
            result = await generator.run(chunk)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - one chunk's bug must not kill the job
            result = ChunkResult(chunk.id, error=f"internal error: {exc!r}")
        finally:
            active.release()
        if not self._cancelled.is_set():
            self._out.put(result)


def run_chunks(
    chunks: Sequence[ChunkInput],
    *,
    teacher: ChatBackend,
    judge: ChatBackend | None,
    config: GenerationConfig,
    store: ChunkStore,
    prompts: PromptSet = DEFAULT_PROMPTS,
    on_result: Callable[[ChunkResult], None] | None = None,
) -> list[ChunkResult]:
    """Convenience: run every chunk to completion (benchmarks, tests, scripts)."""
    runner = PipelineRunner(
        teacher=teacher, judge=judge, config=config, store=store, prompts=prompts
    ).start()
    for chunk in chunks:
        runner.submit(chunk)
    runner.close()
    results: list[ChunkResult] = []
    while not runner.finished:
        res = runner.get(timeout=0.5)
        if res is not None:
            results.append(res)
            if on_result is not None:
                on_result(res)
    runner.join()
    return results
