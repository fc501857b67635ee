"""Many completions with bounded concurrency (Q&A generation, judging, evaluation)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence

from .base import ChatBackend, ChatMessage, Completion, GenerationParams, LLMError

ResultCallback = Callable[[int, "Completion | LLMError"], Awaitable[None] | None]


async def complete_many(
    backend: ChatBackend,
    requests: Sequence[Sequence[ChatMessage]],
    params: GenerationParams | None = None,
    *,
    concurrency: int,
    on_result: ResultCallback | None = None,
) -> list[Completion | LLMError]:
    """Complete every conversation in ``requests``; results come back in the same order.

    At most ``concurrency`` requests are in flight (the backend may limit further). A failure
    of one item (any :class:`LLMError`) is returned in its place instead of raised, so one bad
    item does not lose a batch. ``on_result(index, result)`` is called as each item finishes
    (sync or async) — e.g. to save it and record progress; an exception raised there, like
    any non-``LLMError`` exception, cancels the remaining work and propagates.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    results: list[Completion | LLMError | None] = [None] * len(requests)
    # A fixed set of workers pulling indices: memory stays flat for very large batches.
    indices = iter(range(len(requests)))

    async def worker() -> None:
        for index in indices:
            try:
                result: Completion | LLMError = await backend.complete(requests[index], params)
            except LLMError as exc:
                result = exc
            results[index] = result
            if on_result is not None:
                outcome = on_result(index, result)
                if inspect.isawaitable(outcome):
                    await outcome

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(requests))):
            group.create_task(worker())
    return results  # type: ignore[return-value]  # every slot was filled
