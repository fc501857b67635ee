"""Answering: one async generator, free of Django and of transport.

question → (follow-up rewrite) → retrieval → RAFT prompt → streamed tokens → parsed answer →
quotes verified against the retrieved chunks → numbered citations.

The WebSocket consumer and the OpenAI-compatible endpoint both drive this generator, so the
two answer exactly alike; they only differ in how they ship the events. Everything the
pipeline needs (search, model backends) is passed in, which keeps it testable with real
servers on loopback and no database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raftweb.llm.base import (
    BackendUnavailable,
    ChatBackend,
    ChatMessage,
    GenerationParams,
    LLMError,
    StreamEvent,
    Usage,
)
from raftweb.llm.limiter import QueueCallback
from raftweb.raft.answer import parse_answer
from raftweb.raft.citations import Citation, cite
from raftweb.raft.prompts import build_messages
from raftweb.raft.rewrite import needs_rewrite, rewrite_question

if TYPE_CHECKING:
    from raftweb.retrieval.types import SearchHit

SearchFn = Callable[[str], Awaitable["Sequence[SearchHit]"]]

NO_CONTEXT_ANSWER = (
    "I could not find anything relevant to this question in the knowledge base, "
    "so I cannot answer it from the sources."
)
REFUSAL_NOTE = "The retrieved sources do not contain the answer to this question."


@dataclass(frozen=True, slots=True)
class Retrieved:
    question: str
    search_question: str
    rewritten: bool
    hits: tuple[SearchHit, ...]
    retrieval_s: float


@dataclass(frozen=True, slots=True)
class Token:
    delta: str


@dataclass(slots=True)
class ChatResult:
    """Everything stored with an assistant message."""

    question: str
    search_question: str
    status: str = "ok"  # ok | error | cancelled
    outcome: str = "answered"  # answered | no_context | refused | unparsed | error
    raw: str = ""
    final: str = ""
    reasoning: str = ""
    citations: list[Citation] = field(default_factory=list)
    hits: list[SearchHit] = field(default_factory=list)
    usage: Usage = Usage()
    latency_s: float = 0.0
    ttft_s: float | None = None
    retrieval_s: float = 0.0
    error: str = ""
    error_kind: str = ""  # unavailable | model | retrieval


@dataclass(frozen=True, slots=True)
class Finished:
    result: ChatResult


PipelineEvent = Retrieved | Token | Finished


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    params: GenerationParams = GenerationParams(max_tokens=800, temperature=0.0)
    system: str | None = None


async def answer_stream(
    *,
    question: str,
    history: Sequence[ChatMessage],
    search: SearchFn,
    backend: ChatBackend | Awaitable[ChatBackend],
    rewrite_backend: ChatBackend | Awaitable[ChatBackend] | None = None,
    config: PipelineConfig | None = None,
    on_queue: QueueCallback | None = None,
) -> AsyncIterator[PipelineEvent]:
    """Answer one question; yields progress events and always ends with :class:`Finished`.

    ``history`` holds earlier turns (user questions, assistant *final* answers). Model and
    retrieval failures end in a ``Finished`` with ``status="error"`` rather than raising, so
    a caller can always show an inline error. Cancellation (task.cancel) propagates.
    ``on_queue(position)`` is called while the request waits for a free model slot.
    The backends may be awaitables (e.g. a task still reading the model profile): they are
    awaited only when needed, so that lookup overlaps the search.
    """
    config = config or PipelineConfig()
    started = time.perf_counter()
    result = ChatResult(question=question, search_question=question)

    rewriter = None
    if rewrite_backend is not None and needs_rewrite(history):
        try:
            rewriter = await _resolve(rewrite_backend)
        except LLMError:
            rewriter = None  # the answer call below reports the broken model
    rewrite = await rewrite_question(rewriter, history, question)
    result.search_question = rewrite.question
    try:
        hits = list(await search(rewrite.question))
    except Exception as exc:  # noqa: BLE001 - any store failure becomes an inline error
        result.retrieval_s = time.perf_counter() - started
        yield Finished(_failed(result, "retrieval", f"Search failed: {exc}", started))
        return
    result.hits = hits
    result.retrieval_s = time.perf_counter() - started
    yield Retrieved(question, rewrite.question, rewrite.rewritten, tuple(hits), result.retrieval_s)

    if not hits:
        result.outcome = "no_context"
        result.final = result.raw = NO_CONTEXT_ANSWER
        result.latency_s = time.perf_counter() - started
        yield Finished(result)
        return

    messages = build_messages(rewrite.question, [h.text for h in hits], system=config.system)
    gen_started = time.perf_counter()
    parts: list[str] = []
    usage = rewrite.usage
    try:
        model = await _resolve(backend)
        async for event in _open_stream(model, messages, config.params, on_queue):
            if event.delta:
                if result.ttft_s is None:
                    result.ttft_s = time.perf_counter() - gen_started
                parts.append(event.delta)
                yield Token(event.delta)
            if event.done and event.usage is not None:
                usage = usage + event.usage
    except BackendUnavailable as exc:
        result.raw = "".join(parts)
        yield Finished(_failed(result, "unavailable", str(exc), started))
        return
    except LLMError as exc:
        result.raw = "".join(parts)
        yield Finished(_failed(result, "model", str(exc), started))
        return

    result.raw = "".join(parts)
    result.usage = usage
    finish(result)
    result.latency_s = time.perf_counter() - started
    yield Finished(result)


async def answer(
    *,
    question: str,
    history: Sequence[ChatMessage] = (),
    search: SearchFn,
    backend: ChatBackend | Awaitable[ChatBackend],
    rewrite_backend: ChatBackend | Awaitable[ChatBackend] | None = None,
    config: PipelineConfig | None = None,
) -> ChatResult:
    """The non-streaming twin of :func:`answer_stream` (evaluation, batch jobs): the same
    generator driven to its end, so an answer here is byte-for-byte the one chat shows."""
    result: ChatResult | None = None
    async for event in answer_stream(
        question=question,
        history=history,
        search=search,
        backend=backend,
        rewrite_backend=rewrite_backend,
        config=config,
    ):
        if isinstance(event, Finished):
            result = event.result
    assert result is not None  # answer_stream always ends with Finished
    return result


def finish(result: ChatResult) -> ChatResult:
    """Parse the raw answer and check its quotes against the retrieved chunks (in place)."""
    parsed = parse_answer(result.raw)
    result.reasoning = parsed.reasoning or ""
    result.final = (parsed.final or "").strip()
    if not parsed.parsed_ok or not result.final:
        # No <ANSWER>: tag: show what the model wrote rather than nothing.
        result.outcome = "unparsed"
        result.final = result.raw.strip()
        result.reasoning = ""
    elif parsed.refusal:
        result.outcome = "refused"
    result.citations = cite(parsed.quotes, result.hits)
    return result


async def _resolve(backend: ChatBackend | Awaitable[ChatBackend]) -> ChatBackend:
    return backend if isinstance(backend, ChatBackend) else await backend


def _open_stream(
    backend: ChatBackend,
    messages: Sequence[ChatMessage],
    params: GenerationParams,
    on_queue: QueueCallback | None,
) -> AsyncIterator[StreamEvent]:
    # Backends that queue requests (the one-at-a-time ``hf`` backend, or any backend at its
    # concurrency limit) report the caller's queue position through ``on_queue``.
    if on_queue is None:
        return backend.stream(messages, params)
    return backend.stream(messages, params, on_queue=on_queue)  # type: ignore[call-arg]


def _failed(result: ChatResult, kind: str, message: str, started: float) -> ChatResult:
    result.status = "error"
    result.outcome = "error"
    result.error_kind = kind
    result.error = message or "The model server failed."
    result.latency_s = time.perf_counter() - started
    return result
