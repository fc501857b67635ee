"""Worker side of evaluation runs.

A run is claimed with one conditional update (exactly one worker gets it); then each pending
result (one question × one configuration) is answered and saved on its own, so a killed worker
resumes with what is still pending and never answers a question twice for a configuration.
Answers come from :func:`raftweb.answering.answer`, the code chat uses. Retrieval runs first
(on this thread: it reads the database), then the engine generator answers over those hits on
the run's private event loop. It never enqueues.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from corpus.knowledge.search import kb_search
from evaluation.models import EvalResult, EvalRun
from evaluation.resolve import embedding_label
from evaluation.selectors import run_config_summary, stale_after
from raftweb.answering import PipelineConfig, answer
from raftweb.core.services import profile_spec
from raftweb.errors import RaftwebError
from raftweb.eval.configs import EvalConfig
from raftweb.eval.judge import correctness_messages, is_correct, parse_correctness, soft_correct
from raftweb.eval.mcq import mcq_prompt
from raftweb.eval.scoring import (
    CitedQuote,
    QuestionScore,
    QuestionSpec,
    needs_judge,
    score_answer,
    score_retrieval,
)
from raftweb.llm import LLMError, get_backend
from raftweb.llm.base import (
    BackendUnavailable,
    ChatBackend,
    GenerationParams,
    ModelNotFound,
)
from raftweb.retrieval import SearchHit
from raftweb.shutdown import StopGate
from training.serving import generator_for

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0
JUDGE_MAX_TOKENS = 300
HIT_TEXT_CHARS = 2000

_gate = StopGate()

# Test hook: called after each result is saved (a test raises here to simulate a killed worker).
after_result_saved: Callable[[EvalRun, EvalResult], None] | None = None


def eval_runs_stop(*, timeout: float = SHUTDOWN_GRACE_S) -> bool:
    """Ask this process's evaluation runs to hand their runs back (worker shutdown)."""
    return _gate.stop(timeout=timeout)


def eval_run_claim(*, run_id: int) -> str | None:
    """Take a queued (or abandoned) run; returns this worker's claim token, or None."""
    now = timezone.now()
    token = uuid.uuid4().hex
    stale = Q(status=EvalRun.Status.RUNNING) & (
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - stale_after())
    )
    claimed = (
        EvalRun.objects.filter(pk=run_id)
        .filter(Q(status=EvalRun.Status.QUEUED) | stale)
        .update(
            status=EvalRun.Status.RUNNING,
            heartbeat_at=now,
            claim_token=token,
            started_at=Coalesce("started_at", Value(now)),
        )
    )
    return token if claimed == 1 else None


def eval_run_execute(*, run_id: int) -> EvalRun:
    """Run (or resume) a run to its end; safe to call twice at once (one claims it)."""
    run = EvalRun.objects.select_related("kb").get(pk=run_id)
    if run.status in EvalRun.FINISHED:
        return run
    token = eval_run_claim(run_id=run.pk)
    if token is None:
        log.info("evaluation run %s is being run by another worker; backing off", run.pk)
        return run
    with _gate.tracked():
        run.refresh_from_db()
        return _Execution(run, token).go()


class _HandBack(Exception):
    """The worker is stopping: leave the run for the next one."""


class _Cancelled(Exception):
    pass


@dataclass
class _Answerer:
    config: EvalConfig
    embedding_version: str
    mode: str
    k: int
    backend: ChatBackend
    generator_label: str


class _Execution:
    def __init__(self, run: EvalRun, token: str) -> None:
        self.run = run
        self.token = token
        self.mine = EvalRun.objects.filter(pk=run.pk, claim_token=token)
        self.loop = asyncio.new_event_loop()
        self.judge: ChatBackend | None = None
        self.judge_down = run.judge_unavailable
        self.started = time.monotonic()
        self.done_here = 0
        self.backends: list[ChatBackend] = []

    def go(self) -> EvalRun:
        try:
            if self.run.cancel_requested:
                raise _Cancelled
            self._open_judge()
            for index, raw in enumerate(self.run.configs):
                self._run_config(index, EvalConfig.from_dict(raw))
            return self._finish(EvalRun.Status.SUCCEEDED)
        except _Cancelled:
            return self._finish(EvalRun.Status.CANCELLED)
        except _HandBack:
            # Running with no heartbeat: the stale-run task (or the next worker) resumes it.
            self.mine.update(heartbeat_at=None)
            self.run.refresh_from_db()
            return self.run
        except RaftwebError as exc:
            return self._finish(EvalRun.Status.FAILED, error=exc.message)
        except Exception as exc:  # noqa: BLE001 - the run records any failure and ends
            log.exception("evaluation run %s failed", self.run.pk)
            return self._finish(EvalRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._close()

    # ------------------------------------------------------------------ setup

    def _open_judge(self) -> None:
        if self.judge_down:
            return
        try:
            self.judge = get_backend(profile_spec("judge"))
        except (LLMError, RaftwebError) as exc:
            self._judge_unavailable(str(exc))

    def _judge_unavailable(self, message: str) -> None:
        self.judge, self.judge_down = None, message or "the judge model failed"
        self.mine.update(judge_unavailable=self.judge_down)
        log.warning("evaluation run %s: judge unavailable: %s", self.run.pk, self.judge_down)

    def _answerer(self, config: EvalConfig) -> _Answerer:
        kb = self.run.kb
        generator = generator_for(kb, config.gen)
        self.backends.append(generator.backend)
        return _Answerer(
            config=config,
            embedding_version=embedding_label(kb, config.emb),
            mode=config.mode or self.run.mode,
            k=config.k or self.run.k,
            backend=generator.backend,
            generator_label=generator.label,
        )

    # ------------------------------------------------------------------ units

    def _run_config(self, index: int, config: EvalConfig) -> None:
        pending = (
            EvalResult.objects.filter(
                run=self.run, config_index=index, state=EvalResult.State.PENDING
            )
            .select_related("question")
            .order_by("question__ordinal")
        )
        if not pending.exists():
            return
        answerer = self._answerer(config)
        for result in pending:
            self._between_units()
            self._answer_one(result, answerer)

    def _between_units(self) -> None:
        if _gate.stopping:
            raise _HandBack
        state = self.mine.values_list("cancel_requested", flat=True).first()
        if state is None:
            raise _HandBack  # another worker holds the claim now
        if state:
            raise _Cancelled
        self.mine.update(heartbeat_at=timezone.now())

    def _answer_one(self, result: EvalResult, a: _Answerer) -> None:
        q = result.question
        spec = QuestionSpec(
            question=q.question,
            gold_answer=q.gold_answer,
            gold_doc_ids=frozenset(q.gold_doc_ids) or None,
            refusal=q.refusal,
            options=tuple(q.options or ()),
            correct=q.correct,
            oracle_chunk=q.oracle_chunk_id or None,
        )
        asked = mcq_prompt(q.question, spec.options) if spec.options else q.question
        score = QuestionScore()
        fields: dict[str, Any] = {"generator": a.generator_label[:200]}
        started = time.perf_counter()
        try:
            hits = kb_search(
                kb=self.run.kb,
                query=asked,
                mode=a.mode,
                k=a.k,
                embedding_version=a.embedding_version,
            )
        except RaftwebError as exc:
            score.error = f"retrieval failed: {exc.message}"
            self._save(result, score, fields | {"status": "error", "error": score.error})
            return
        retrieval_s = time.perf_counter() - started
        score_retrieval(spec, [h.document_id for h in hits], score, [h.chunk_id for h in hits])
        chat = self.loop.run_until_complete(
            answer(
                question=asked,
                search=_fixed(hits),
                backend=a.backend,
                config=PipelineConfig(
                    params=GenerationParams(max_tokens=settings.EVAL_MAX_TOKENS, temperature=0.0)
                ),
            )
        )
        fields |= {
            "status": chat.status,
            "outcome": chat.outcome,
            "answer": chat.raw,
            "final": chat.final,
            "hits": [_hit(h) for h in hits],
            "citations": [c.as_dict() for c in chat.citations],
            "error": chat.error,
        }
        if chat.status != "ok":
            score.error = chat.error or "the model failed"
            self._save(result, score, fields)
            return
        score_answer(
            spec,
            raw=chat.raw,
            final=chat.final,
            citations=[CitedQuote(c.verified, c.document_id) for c in chat.citations],
            score=score,
        )
        score.latency_ms = round((retrieval_s + chat.latency_s) * 1000, 1)
        score.generation_s = max(0.0, chat.latency_s - chat.retrieval_s)
        score.completion_tokens = chat.usage.completion_tokens
        if needs_judge(spec, score):
            self._judge_one(spec, chat.final if score.parse_ok else chat.raw, score)
        self._save(result, score, fields)

    def _judge_one(self, spec: QuestionSpec, answer_text: str, score: QuestionScore) -> None:
        if self.judge is None:
            return
        messages = correctness_messages(
            question=spec.question, reference=spec.gold_answer, answer=answer_text
        )
        params = GenerationParams(max_tokens=JUDGE_MAX_TOKENS, temperature=0.0)
        for _attempt in range(2):  # one retry on an unparseable reply, then unjudged
            try:
                reply = self.loop.run_until_complete(self.judge.complete(messages, params))
            except (BackendUnavailable, ModelNotFound) as exc:
                # A judge that is down stays down for this run: the rest is still computed.
                self._judge_unavailable(str(exc))
                score.judge_error = self.judge_down
                return
            except LLMError as exc:
                score.judge_error = str(exc)[:500]
                return
            verdict = parse_correctness(reply.text)
            if verdict is not None:
                score.judge_score = verdict.score
                score.judge_reason = verdict.reason
                score.judge_hard = is_correct(verdict.score)
                score.judge_soft = soft_correct(
                    hard=score.judge_hard,
                    oracle_retrieved=score.oracle_retrieved,
                    refused=bool(score.refused),
                )
                return
        score.judge_error = "the judge's reply could not be parsed (after a retry)"

    def _save(self, result: EvalResult, score: QuestionScore, fields: dict[str, Any]) -> None:
        with transaction.atomic():
            saved = EvalResult.objects.filter(
                pk=result.pk,
                state=EvalResult.State.PENDING,
                run__claim_token=self.token,
            ).update(
                state=EvalResult.State.DONE,
                scores=score.as_dict(),
                finished_at=timezone.now(),
                **fields,
            )
            if not saved:
                raise _HandBack  # the run was taken over; its new worker answers the rest
            done = EvalResult.objects.filter(run=self.run, state=EvalResult.State.DONE).count()
            self.done_here += 1
            left = max(0, self.run.total_units - done)
            rate = (time.monotonic() - self.started) / self.done_here
            self.mine.update(done_units=done, eta_seconds=round(rate * left, 1))
        if after_result_saved is not None:
            result.refresh_from_db()
            after_result_saved(self.run, result)

    # ------------------------------------------------------------------ end

    def _finish(self, status: str, *, error: str = "") -> EvalRun:
        self.run.refresh_from_db()
        summary = run_config_summary(self.run)
        self.mine.update(
            status=status,
            error=error[:5000],
            summary=summary,
            finished_at=timezone.now(),
            eta_seconds=None,
            heartbeat_at=timezone.now(),
        )
        self.run.refresh_from_db()
        log.info("evaluation run %s %s", self.run.pk, status)
        return self.run

    def _close(self) -> None:
        for backend in [*self.backends, *([self.judge] if self.judge else [])]:
            if backend.spec.backend == "hf":
                continue  # its aclose unloads the shared in-process model; it holds no loop
            try:
                self.loop.run_until_complete(backend.aclose())
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing a backend failed", exc_info=True)
        self.loop.close()


def _fixed(hits: Sequence[SearchHit]) -> Callable[[str], Any]:
    """The answering pipeline's search step, over hits retrieved beforehand."""

    async def search(_question: str) -> Sequence[SearchHit]:
        return hits

    return search


def _hit(h: SearchHit) -> dict[str, Any]:
    return {
        "chunk_id": h.chunk_id,
        "document_id": h.document_id,
        "document": h.document_name,
        "page": h.page,
        "score": round(float(h.score), 6),
        "text": h.text[:HIT_TEXT_CHARS],
    }
