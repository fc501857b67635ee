"""Backend "openai": any OpenAI-compatible chat server (vLLM, TGI, llama.cpp, transformers serve).

The official ``openai`` async client does the HTTP; its own retries are switched off
(``max_retries=0``) because we retry ourselves, with exponential backoff and jitter, on the
errors that can heal (429, 5xx, connection errors, timeouts) and translate everything else to
our errors with a message that names the base URL and the setting to change.

Concurrency: at most ``spec.max_concurrency`` requests per backend instance are in flight, via
a :class:`~raftweb.llm.limiter.FairLimiter` (shared safely across event loops). The
``AsyncOpenAI`` client holds an HTTP connection pool bound to the loop that created it, so
there is one client per event loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import openai

from .base import (
    BackendHealth,
    BackendUnavailable,
    BadRequest,
    ChatBackend,
    ChatMessage,
    Completion,
    GenerationParams,
    LLMError,
    ModelNotFound,
    ModelSpec,
    StreamEvent,
    Usage,
    monotonic,
)
from .limiter import FairLimiter, QueueCallback
from .registry import register_backend

T = TypeVar("T")

# Servers without auth still make the client insist on *some* key.
_PLACEHOLDER_KEY = "not-needed"
HEALTH_TIMEOUT_S = 5.0
DEFAULT_RETRY_BASE_S = 0.5
DEFAULT_RETRY_MAX_S = 8.0


def approx_tokens(text: str) -> int:
    """Rough token count (~4 characters per token for English BPE vocabularies).

    Only used when a server streams without reporting usage; good enough for cost and
    throughput estimates, not for billing.
    """
    return max(1, round(len(text) / 4)) if text else 0


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:300]
    return str(exc.message or exc)[:300]


def _scrub(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, "[redacted]")
    if isinstance(value, dict):
        return {k: _scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secret) for v in value]
    return value


def _scrub_exception(exc: BaseException, secret: str) -> None:
    """Remove the API key from a client exception, in place. Some servers echo the key they
    were sent in their error ("Incorrect API key provided: sk-…"); the exception's text goes
    into our messages, pages and logs, and it is chained (``raise … from exc``) into every
    logged traceback."""
    if len(secret) < 6:  # too short to tell from ordinary text; nothing worth hiding
        return
    exc.args = tuple(_scrub(arg, secret) for arg in exc.args)
    for attr in ("message", "body"):
        value = getattr(exc, attr, None)
        if isinstance(value, str | dict | list):
            setattr(exc, attr, _scrub(value, secret))


class _Malformed(Exception):
    """A 200 reply that is not a usable chat completion (cut short, no choices)."""


async def _open_chunk_stream(client: openai.AsyncOpenAI, body: dict[str, Any]) -> Any:
    """A streamed chat completion whose chunks arrive as the server's JSON objects.

    Why not ``client.chat.completions.create(stream=True)``: it builds a pydantic model of
    every chunk, which was half of the web process's event-loop time under 50 streaming chats
    (py-spy, bench/chat.py). The client's own request, error and SSE handling stay the same."""
    return await client.post(
        "/chat/completions",
        body=body,
        cast_to=object,
        stream=True,
        stream_cls=openai.AsyncStream[object],
    )


def _chunk_fields(chunk: Any) -> tuple[Usage | None, list[tuple[str | None, str | None]]]:
    """(usage, [(delta text, finish reason) per choice]) of one chunk; _Malformed if it is not
    a chat completion chunk."""
    if not isinstance(chunk, dict):
        raise _Malformed(f"a stream chunk that is not an object: {str(chunk)[:100]}")
    raw_usage = chunk.get("usage")
    usage = None
    if isinstance(raw_usage, dict):
        try:
            usage = Usage(
                int(raw_usage.get("prompt_tokens") or 0),
                int(raw_usage.get("completion_tokens") or 0),
            )
        except (TypeError, ValueError) as exc:
            raise _Malformed(f"a stream chunk with unreadable usage: {raw_usage!r}"[:200]) from exc
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _Malformed(f"a stream chunk whose choices are not a list: {str(choices)[:100]}")
    out: list[tuple[str | None, str | None]] = []
    for choice in choices:
        if not isinstance(choice, dict):
            raise _Malformed(f"a stream choice that is not an object: {str(choice)[:100]}")
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        reason = choice.get("finish_reason")
        out.append(
            (
                content if isinstance(content, str) else None,
                reason if isinstance(reason, str) else None,
            )
        )
    return usage, out


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@register_backend("openai")
class OpenAIBackend(ChatBackend):
    """Chat completions over the OpenAI HTTP API.

    ``spec.extra`` may hold ``retry_base_s`` / ``retry_max_s`` (backoff base and cap) and
    ``connect_timeout_s``.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.limiter = FairLimiter(max(1, spec.max_concurrency))
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._clients_lock = threading.Lock()
        self._retry_base_s = float(spec.extra.get("retry_base_s", DEFAULT_RETRY_BASE_S))
        self._retry_max_s = float(spec.extra.get("retry_max_s", DEFAULT_RETRY_MAX_S))

    # ----- plumbing -----

    @property
    def where(self) -> str:
        return self.spec.base_url or "the default OpenAI endpoint"

    def _timeout(self, total: float) -> openai.Timeout:
        connect = float(self.spec.extra.get("connect_timeout_s", min(total, 10.0)))
        return openai.Timeout(total, connect=connect)

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            client = self._clients.get(loop)
            if client is None:
                client = openai.AsyncOpenAI(
                    base_url=self.spec.base_url or None,
                    api_key=self.spec.api_key or _PLACEHOLDER_KEY,
                    timeout=self._timeout(self.spec.timeout_s),
                    max_retries=0,  # we retry ourselves, with our own backoff and errors
                )
                self._clients[loop] = client
            return client

    def _request(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [m.as_dict() for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _unavailable(self, attempts: int, reason: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"The model server at {self.where} is unavailable ({reason}; gave up after "
            f"{attempts} attempt{'s' if attempts != 1 else ''}). Check that the server is "
            f"running, or change the base URL in {self.spec.setting}."
        )

    def _classify(self, exc: Exception) -> Exception:
        """Map a client exception to :class:`_Retryable` or to one of our final errors."""
        if self.spec.api_key:
            _scrub_exception(exc, self.spec.api_key)
        if isinstance(exc, openai.APITimeoutError):
            return _Retryable(f"timed out after {self.spec.timeout_s:g} s")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return _Retryable(f"connection failed: {type(cause).__name__}: {cause}".rstrip(": "))
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _detail(exc)
            if status == 429 or status >= 500:
                retry_after = None
                header = exc.response.headers.get("retry-after") if exc.response else None
                if header:
                    try:
                        retry_after = float(header)
                    except ValueError:
                        retry_after = None
                return _Retryable(f"HTTP {status}: {detail}", retry_after)
            if status == 404:
                return ModelNotFound(
                    f"Model {self.spec.model!r} was not found at {self.where} "
                    f"(HTTP 404: {detail}). Change the model name (or the base URL, which usually ends in /v1) in "
                    f"{self.spec.setting}."
                )
            if status in (401, 403):
                return BadRequest(
                    f"The model server at {self.where} refused the credentials (HTTP {status}: "
                    f"{detail}). Check the API key in {self.spec.setting}."
                )
            return BadRequest(
                f"The model server at {self.where} rejected the request for model "
                f"{self.spec.model!r} (HTTP {status}: {detail})."
            )
        if isinstance(exc, openai.OpenAIError):
            return BadRequest(f"The OpenAI client failed for {self.where}: {exc}")
        if isinstance(exc, (_Malformed, ValueError)):
            # A truncated body (JSONDecodeError) or one that fails the client's validation
            # (a ValueError too) is the server failing: as healable as a 5xx.
            return _Retryable(f"malformed reply: {str(exc)[:200]}")
        return exc

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full-jitter exponential backoff: spreads retries from many callers apart.
        delay = min(self._retry_max_s, self._retry_base_s * (2**attempt))
        delay = random.uniform(delay / 2, delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._retry_max_s))
        return delay

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except (openai.OpenAIError, OSError, ValueError, _Malformed) as exc:
                classified = self._classify(exc)
                if not isinstance(classified, _Retryable):
                    raise classified from exc
                if attempt >= self.spec.max_retries:
                    raise self._unavailable(attempt + 1, classified.reason) from exc
                await asyncio.sleep(self._backoff(attempt, classified.retry_after))
                attempt += 1

    async def _create_checked(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> Any:
        response = await client.chat.completions.create(**body)
        if not response.choices or response.choices[0].message is None:
            raise _Malformed("no choices")
        return response

    # ----- the interface -----

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        on_queue: QueueCallback | None = None,
    ) -> Completion:
        params = params or GenerationParams()
        client = self._client()
        body = self._request(messages, params)
        async with self.limiter.slot(on_queue):
            start = monotonic()
            response = await self._with_retries(lambda: self._create_checked(client, body))
            latency = monotonic() - start
        choice = response.choices[0]
        text = choice.message.content or ""
        if response.usage is not None:
            usage = Usage(response.usage.prompt_tokens, response.usage.completion_tokens)
        else:  # some servers omit usage; estimate so throughput numbers still exist
            usage = Usage(sum(approx_tokens(m.content) for m in messages), approx_tokens(text))
        return Completion(
            text=text,
            usage=usage,
            latency_s=latency,
            model=response.model or self.spec.model,
            finish_reason=choice.finish_reason,
        )

    async def stream(  # type: ignore[override]
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        on_queue: QueueCallback | None = None,
    ) -> AsyncIterator[StreamEvent]:
        params = params or GenerationParams()
        client = self._client()
        body = self._request(messages, params)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        async with self.limiter.slot(on_queue):
            start = monotonic()
            # Only opening the stream is retried: once text has been yielded a retry would
            # repeat it, so a failure mid-stream is reported instead.
            response = await self._with_retries(lambda: _open_chunk_stream(client, body))
            usage: Usage | None = None
            finish_reason: str | None = None
            pieces: list[str] = []
            try:
                async for chunk in response:
                    chunk_usage, choices = _chunk_fields(chunk)
                    if chunk_usage is not None:
                        usage = chunk_usage
                    for delta, reason in choices:
                        if reason:
                            finish_reason = reason
                        if delta:
                            pieces.append(delta)
                            yield StreamEvent(delta=delta)
            except (openai.OpenAIError, OSError, _Malformed) as exc:
                classified = self._classify(exc)
                if isinstance(exc, openai.APIStatusError) and isinstance(classified, LLMError):
                    raise classified from exc
                # Anything else here (a dropped connection, an error event in the stream) is
                # the server failing part-way; the text so far cannot be un-sent, so no retry.
                if isinstance(classified, _Retryable):
                    reason = classified.reason
                else:
                    body = getattr(exc, "body", None)
                    reason = str(body if isinstance(body, str) and body else exc)[:300]
                raise BackendUnavailable(
                    f"The model server at {self.where} failed mid-answer ({reason}). Check the "
                    f"server, or change the base URL in {self.spec.setting}."
                ) from exc
            finally:
                await response.close()
            if usage is None:
                # The server ignored stream_options.include_usage: estimate from the text.
                usage = Usage(
                    sum(approx_tokens(m.content) for m in messages), approx_tokens("".join(pieces))
                )
            yield StreamEvent(
                done=True,
                usage=usage,
                finish_reason=finish_reason,
                latency_s=monotonic() - start,
            )

    async def health(self) -> BackendHealth:
        client = self._client().with_options(
            timeout=self._timeout(min(HEALTH_TIMEOUT_S, self.spec.timeout_s)), max_retries=0
        )
        try:
            page = await client.models.list()
        except (openai.OpenAIError, OSError) as exc:
            classified = self._classify(exc)
            if isinstance(classified, _Retryable):
                return BackendHealth(
                    False,
                    f"Model server at {self.where} is unreachable ({classified.reason}). "
                    f"Start it, or change the base URL in {self.spec.setting}.",
                )
            message = str(classified) if isinstance(classified, LLMError) else str(exc)
            return BackendHealth(False, message)
        ids = [model.id for model in page.data]
        if ids and self.spec.model not in ids:
            return BackendHealth(
                False,
                f"Model server at {self.where} is up but does not list model "
                f"{self.spec.model!r} (it has: {', '.join(ids[:10])}). Change the model name in "
                f"{self.spec.setting}.",
            )
        return BackendHealth(
            True, f"Model server at {self.where} is up ({len(ids)} models listed)."
        )

    async def aclose(self) -> None:
        """Close the client of the running loop (clients of other loops die with them)."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.close()
