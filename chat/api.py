"""OpenAI-compatible chat endpoint: ``model`` is a knowledge-base slug.

``POST /api/v1/chat/completions`` answers exactly as the chat page does (same pipeline: follow-up
rewrite, hybrid retrieval, RAFT prompt, quote verification). ``message.content`` is the model's
full RAFT answer (reasoning, quotes, ``<ANSWER>:``); the verified citations travel in an extra
top-level field ``citations`` and the parsed parts in ``raft``. Streaming uses server-sent
events like OpenAI's, with ``citations``/``raft`` on the last chunk.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Field, Router, Schema

from chat.selectors import chat_kb_get, chat_kbs_for, user_can_chat
from chat.services import ChatEngine, ChatError, chat_engine_for, openai_history
from raftweb.answering import (
    ChatResult,
    Finished,
    PipelineConfig,
    PipelineEvent,
    Token,
    answer_stream,
)
from raftweb.core.roles import Role, user_has_role
from raftweb.core.throttle import UserRateThrottle
from raftweb.errors import (
    Forbidden,
    Invalid,
    NotFound,
    RaftwebError,
    Unavailable,
    UpstreamError,
    redact_addresses,
)
from raftweb.llm.base import GenerationParams

router = Router(tags=["chat"])

# Bounds on one request (the question itself: settings.MAX_QUESTION_CHARS). The rewriter reads
# only the last turns anyway; these keep a client from making the server parse megabytes.
MAX_MESSAGES = 100
MAX_TOTAL_CHARS = 200_000


class ChatMessageIn(Schema):
    role: str
    content: Any = None


class StreamOptionsIn(Schema):
    include_usage: bool = False


class ChatCompletionIn(Schema):
    model: str = Field(..., description="The knowledge base slug (see GET /api/v1/models).")
    messages: list[ChatMessageIn]
    stream: bool = False
    stream_options: StreamOptionsIn | None = None
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class ModelOut(Schema):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "raftweb"
    name: str


class ModelListOut(Schema):
    object: str = "list"
    data: list[ModelOut]


@router.get("/v1/models", response=ModelListOut, summary="Knowledge bases this token may chat with")
def models_list(request: HttpRequest) -> dict[str, Any]:
    kbs = chat_kbs_for(request.user).order_by("slug")
    return {
        "object": "list",
        "data": [
            {"id": kb.slug, "created": int(kb.created_at.timestamp()), "name": kb.name}
            for kb in kbs
        ],
    }


@router.post(
    "/v1/chat/completions",
    summary="OpenAI-compatible chat completion over a knowledge base",
    response={200: dict},
    throttle=[UserRateThrottle("chat")],  # RAFTWEB_RATE_CHAT, shared with the chat page
)
async def chat_completions(request: HttpRequest, payload: ChatCompletionIn) -> Any:
    user = request.user
    if not await sync_to_async(user_can_chat)(user):
        raise Forbidden("Your role does not allow chatting.")
    kb = await sync_to_async(chat_kb_get)(user=user, slug=payload.model)
    if kb is None:
        raise NotFound(
            f"No knowledge base {payload.model!r} is available to you.", code="model_not_found"
        )
    messages = [{"role": m.role, "content": _text(m.content)} for m in payload.messages]
    _check_size(messages)
    try:
        question, history = openai_history(messages)
    except ChatError as exc:
        raise Invalid(str(exc), code="invalid_messages") from exc
    # Where the model server lives is for admins (errors name it); others see that it failed.
    show_addresses = await sync_to_async(user_has_role)(user, Role.ADMIN)
    engine = await chat_engine_for(kb=kb)
    stream = answer_stream(
        question=question,
        history=history,
        search=engine.search,
        backend=engine.model.backend,
        rewrite_backend=engine.model.backend,
        config=PipelineConfig(params=_params(payload)),
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    # Read up to the first token before answering, so a model server that is down becomes a
    # plain 503 rather than a stream that breaks after its headers were sent.
    head: list[PipelineEvent] = []
    async for event in stream:
        head.append(event)
        if isinstance(event, (Token, Finished)):
            break
    last = head[-1] if head else None
    if isinstance(last, Finished) and last.result.status == "error":
        await stream.aclose()
        raise _error_for(last.result, show_addresses)
    if payload.stream:
        include_usage = bool(payload.stream_options and payload.stream_options.include_usage)
        sse = _sse(stream, head, completion_id, created, kb.slug, include_usage, show_addresses)
        response = StreamingHttpResponse(sse, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    result = await _drain(stream, head)
    if result.status == "error":
        raise _error_for(result, show_addresses)
    return _completion_body(result, completion_id, created, kb.slug, engine)


async def _drain(stream: AsyncIterator[PipelineEvent], head: list[PipelineEvent]) -> ChatResult:
    for event in head:
        if isinstance(event, Finished):
            return event.result
    async for event in stream:
        if isinstance(event, Finished):
            return event.result
    raise RuntimeError("the pipeline ended without a result")


async def _sse(
    stream: AsyncIterator[PipelineEvent],
    head: list[PipelineEvent],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    show_addresses: bool,
) -> AsyncIterator[str]:
    async def events() -> AsyncIterator[PipelineEvent]:
        for event in head:
            yield event
        async for event in stream:
            yield event

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    first = True
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for event in events():
            if isinstance(event, Token):
                delta = (
                    {"role": "assistant", "content": event.delta}
                    if first
                    else {"content": event.delta}
                )
                first = False
                yield chunk(delta)
            elif isinstance(event, Finished):
                result = event.result
                if result.status == "error":
                    err = _error_for(result, show_addresses)
                    yield f"data: {json.dumps(err.as_body())}\n\n"
                    break
                if first and result.raw:  # answered without the model (nothing retrieved)
                    yield chunk({"role": "assistant", "content": result.raw})
                yield chunk({}, "stop", citations=_citations(result), raft=_raft(result))
                if include_usage:
                    body = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(result),
                    }
                    yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"


def _completion_body(
    result: ChatResult, completion_id: str, created: int, model: str, engine: ChatEngine
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": engine.model.model_version[-60:],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.raw},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(result),
        "citations": _citations(result),
        "raft": _raft(result),
    }


def _citations(result: ChatResult) -> list[dict[str, Any]]:
    return [c.as_dict() for c in result.citations]


def _raft(result: ChatResult) -> dict[str, Any]:
    return {
        "final": result.final,
        "reasoning": result.reasoning,
        "outcome": result.outcome,
        "question": result.search_question,
        "retrieved": [
            {"chunk_id": h.chunk_id, "document": h.document_name, "page": h.page, "score": h.score}
            for h in result.hits
        ],
    }


def _usage(result: ChatResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "total_tokens": result.usage.total_tokens,
    }


def _error_for(result: ChatResult, show_addresses: bool) -> RaftwebError:
    message = result.error if show_addresses else redact_addresses(result.error)
    if result.error_kind in ("unavailable", "retrieval"):
        return Unavailable(message)
    return UpstreamError(message)


def _check_size(messages: list[dict[str, str]]) -> None:
    """Refuse requests too big to be a chat turn, with a message saying what the limit is."""
    if len(messages) > MAX_MESSAGES:
        raise Invalid(
            f"Too many messages ({len(messages)}); send at most {MAX_MESSAGES}.",
            code="too_long",
            status=422,
            details={"max_messages": MAX_MESSAGES},
        )
    limit = settings.MAX_QUESTION_CHARS
    users = [m for m in messages if m["role"] == "user"]
    question = len(users[-1]["content"]) if users else 0
    if question > limit:
        raise Invalid(
            f"The question is {question:,} characters long; the limit is {limit:,}.",
            code="too_long",
            status=422,
            details={"max_chars": limit, "chars": question},
        )
    total = sum(len(m["content"]) for m in messages)
    if total > MAX_TOTAL_CHARS:
        raise Invalid(
            f"The messages hold {total:,} characters; the limit is {MAX_TOTAL_CHARS:,}.",
            code="too_long",
            status=422,
            details={"max_total_chars": MAX_TOTAL_CHARS, "chars": total},
        )


def _params(payload: ChatCompletionIn) -> GenerationParams:
    defaults = PipelineConfig().params
    return GenerationParams(
        max_tokens=payload.max_completion_tokens or payload.max_tokens or defaults.max_tokens,
        temperature=defaults.temperature if payload.temperature is None else payload.temperature,
        top_p=defaults.top_p if payload.top_p is None else payload.top_p,
    )


def _text(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)
