from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from raftweb.llm import (
    BackendHealth,
    BadRequest,
    ChatBackend,
    ChatMessage,
    Completion,
    GenerationParams,
    LLMError,
    ModelSpec,
    StreamEvent,
    Usage,
    complete_many,
)
from raftweb.llm.hf_backend import HFBackend


class SlowEchoBackend(ChatBackend):
    """Echoes the prompt after a delay that shrinks with the index, so finishing order is the
    reverse of request order; prompts starting with "bad" are refused like a real 4xx."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.inside = 0
        self.peak = 0

    async def complete(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Completion:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            prompt = messages[-1].content
            await asyncio.sleep(0.002 * (20 - int(prompt.split()[-1])))
            if prompt.startswith("bad"):
                raise BadRequest(f"refused: {prompt}")
            return Completion(text=prompt.upper(), usage=Usage(1, 1), latency_s=0.0, model="echo")
        finally:
            self.inside -= 1

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        yield StreamEvent(done=True)

    async def health(self) -> BackendHealth:
        return BackendHealth(True, "ok")


def _requests(prompts: list[str]) -> list[list[ChatMessage]]:
    return [[ChatMessage("user", prompt)] for prompt in prompts]


async def test_it_keeps_order_bounds_concurrency_and_captures_errors() -> None:
    backend = SlowEchoBackend(ModelSpec(backend="echo", model="echo"))
    prompts = [("bad " if i in (3, 7) else "q ") + str(i) for i in range(12)]
    seen: list[int] = []

    results = await complete_many(
        backend, _requests(prompts), concurrency=3, on_result=lambda i, r: seen.append(i)
    )

    assert backend.peak == 3
    assert len(results) == 12
    for index, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
        if index in (3, 7):
            assert isinstance(result, BadRequest)
            assert str(result) == f"refused: {prompt}"
        else:
            assert isinstance(result, Completion)
            assert result.text == prompt.upper()
    assert sorted(seen) == list(range(12))
    assert seen != list(range(12))  # callbacks come as items finish, not in request order


async def test_it_awaits_an_async_callback_and_handles_an_empty_batch() -> None:
    backend = SlowEchoBackend(ModelSpec(backend="echo", model="echo"))
    saved: dict[int, str] = {}

    async def save(index: int, result: Completion | LLMError) -> None:
        await asyncio.sleep(0)
        assert isinstance(result, Completion)
        saved[index] = result.text

    await complete_many(backend, _requests(["a 1", "b 2"]), concurrency=8, on_result=save)
    assert saved == {0: "A 1", 1: "B 2"}
    assert await complete_many(backend, [], concurrency=2) == []


async def test_it_rejects_a_concurrency_below_one() -> None:
    backend = SlowEchoBackend(ModelSpec(backend="echo", model="echo"))
    with pytest.raises(ValueError):
        await complete_many(backend, _requests(["a 1"]), concurrency=0)


async def test_it_runs_a_batch_on_the_tiny_hf_model(tiny_model_dir: Path) -> None:
    backend = HFBackend(ModelSpec(backend="hf", model=str(tiny_model_dir), device="cpu"))
    params = GenerationParams(max_tokens=4)
    results = await complete_many(
        backend, _requests(["one 1", "two 2", "three 3"]), params, concurrency=2
    )
    assert all(isinstance(r, Completion) and r.usage.completion_tokens == 4 for r in results)
    # Greedy decoding: the same prompt alone gives the same answer as inside the batch.
    alone = await backend.complete([ChatMessage("user", "two 2")], params)
    assert alone.text == results[1].text  # type: ignore[union-attr]
