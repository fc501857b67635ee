from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftweb.llm import (
    BackendUnavailable,
    BadRequest,
    ChatMessage,
    Completion,
    GenerationParams,
    ModelNotFound,
    ModelSpec,
    complete_many,
)
from raftweb.llm.openai_backend import OpenAIBackend, approx_tokens
from tests.engine.llm.flaky_server import ANSWER, FlakyServer, flaky_server
from tests.fixtures.serve import TinyOpenAIServer, free_port, start_tiny_openai_server

MESSAGES = [ChatMessage("user", "How long do refunds take?")]
SETTING = "model profile 'judge'"


def _backend(base_url: str, model: str, **kwargs: Any) -> OpenAIBackend:
    extra = {"retry_base_s": 0.01, "retry_max_s": 0.05, **kwargs.pop("extra", {})}
    fields: dict[str, Any] = {"timeout_s": 20.0, "max_retries": 2, **kwargs}
    return OpenAIBackend(
        ModelSpec(
            backend="openai", model=model, base_url=base_url, setting=SETTING, extra=extra, **fields
        )
    )


@pytest.fixture
def served(tiny_openai_server: TinyOpenAIServer) -> OpenAIBackend:
    return _backend(tiny_openai_server.base_url, tiny_openai_server.model)


@pytest.fixture
def flaky() -> Iterator[Any]:
    servers: list[Any] = []

    def start(script: list[Any]) -> FlakyServer:
        context = flaky_server(script)
        servers.append(context)
        return context.__enter__()

    yield start
    for context in servers:
        context.__exit__(None, None, None)


# ----- against the real transformers serve ---------------------------------------------


async def test_it_completes_against_transformers_serve(served: OpenAIBackend) -> None:
    completion = await served.complete(MESSAGES, GenerationParams(max_tokens=8))
    assert completion.text
    assert completion.usage.completion_tokens == 8
    assert completion.usage.prompt_tokens > len(MESSAGES[0].content.split())
    assert completion.finish_reason == "length"
    assert completion.latency_s > 0
    # Greedy decoding on the server is deterministic.
    again = await served.complete(MESSAGES, GenerationParams(max_tokens=8))
    assert again.text == completion.text
    assert (await served.health()).ok


async def test_it_streams_from_transformers_serve(served: OpenAIBackend) -> None:
    events = [e async for e in served.stream(MESSAGES, GenerationParams(max_tokens=12))]
    deltas = [e.delta for e in events[:-1]]
    assert len(deltas) >= 3 and all(deltas)
    final = events[-1]
    assert final.done and not any(e.done for e in events[:-1])
    assert final.usage is not None and final.usage.completion_tokens == 12
    assert final.finish_reason == "length"
    whole = await served.complete(MESSAGES, GenerationParams(max_tokens=12))
    # Same greedy tokens; streaming may only differ in how a split multi-byte char is shown.
    assert "".join(deltas).replace("\ufffd", "") == whole.text.replace("\ufffd", "")


async def test_it_runs_concurrent_requests_against_transformers_serve(
    tiny_openai_server: TinyOpenAIServer,
) -> None:
    backend = _backend(tiny_openai_server.base_url, tiny_openai_server.model, max_concurrency=4)
    requests = [[ChatMessage("user", f"Question number {i}?")] for i in range(8)]
    results = await complete_many(backend, requests, GenerationParams(max_tokens=6), concurrency=8)
    assert all(isinstance(r, Completion) and r.usage.completion_tokens == 6 for r in results)
    assert backend.limiter.active == 0


async def test_it_reports_a_4xx_from_transformers_serve_without_retrying(
    tiny_openai_server: TinyOpenAIServer,
) -> None:
    # The server is pinned to the tiny model, so another model name is refused with HTTP 400.
    backend = _backend(
        tiny_openai_server.base_url,
        "some-other-model",
        extra={"retry_base_s": 5.0, "retry_max_s": 5.0},
    )
    started = time.monotonic()
    with pytest.raises(BadRequest) as info:
        await backend.complete(MESSAGES, GenerationParams(max_tokens=4))
    assert time.monotonic() - started < 2.5  # a retry would have slept >= 2.5 s
    message = str(info.value)
    assert "HTTP 400" in message and tiny_openai_server.base_url in message
    assert "'some-other-model'" in message


async def test_it_gives_a_clear_error_quickly_when_the_server_is_killed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = start_tiny_openai_server(tiny_model_dir, tmp_path)
    try:
        backend = _backend(server.base_url, server.model, timeout_s=5.0, max_retries=2)
        assert (await backend.complete(MESSAGES, GenerationParams(max_tokens=4))).text
        server.kill()
        assert not server.alive
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            await backend.complete(MESSAGES, GenerationParams(max_tokens=4))
        assert time.monotonic() - started < 3.0
        message = str(info.value)
        assert server.base_url in message and SETTING in message
        assert "3 attempts" in message and "connection failed" in message
        health = await backend.health()
        assert not health.ok and server.base_url in health.detail
    finally:
        server.kill()


# ----- errors with no server at all --------------------------------------------------------


async def test_it_gives_a_clear_error_for_an_unreachable_port() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    backend = _backend(base_url, "m", max_retries=1)
    with pytest.raises(BackendUnavailable) as info:
        await backend.complete(MESSAGES)
    assert str(info.value).startswith(
        f"The model server at {base_url} is unavailable (connection failed"
    )
    assert f"change the base URL in {SETTING}" in str(info.value)
    with pytest.raises(BackendUnavailable):
        [e async for e in backend.stream(MESSAGES)]
    health = await backend.health()
    assert not health.ok and "unreachable" in health.detail


# ----- retries and limits against the scripted loopback server ------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_it_retries_transient_errors_with_backoff(flaky: Any, status: int) -> None:
    server = flaky([status, status, 200])
    backend = _backend(
        server.base_url, "flaky", max_retries=3, extra={"retry_base_s": 0.05, "retry_max_s": 1.0}
    )
    completion = await backend.complete(MESSAGES)
    assert completion.text == ANSWER
    assert completion.usage.prompt_tokens == 9 and completion.usage.completion_tokens == 7
    assert server.hits == 3
    gaps = [b - a for a, b in zip(server.hit_times, server.hit_times[1:], strict=False)]
    # Full jitter: attempt n waits between base*2^n/2 and base*2^n.
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05


async def test_it_gives_up_after_max_retries(flaky: Any) -> None:
    server = flaky([503])
    backend = _backend(server.base_url, "flaky", max_retries=2)
    with pytest.raises(BackendUnavailable) as info:
        await backend.complete(MESSAGES)
    assert server.hits == 3
    assert "HTTP 503: scripted 503" in str(info.value) and "3 attempts" in str(info.value)


async def test_it_retries_malformed_replies_like_server_errors(flaky: Any) -> None:
    # A body cut in half and a reply without choices are a server failing, not a bad request.
    server = flaky(["truncated-json", "no-choices", 200])
    backend = _backend(server.base_url, "flaky", extra={"retry_base_s": 0.01})
    completion = await backend.complete(MESSAGES)
    assert completion.text == ANSWER and server.hits == 3


async def test_it_gives_up_on_replies_that_stay_malformed(flaky: Any) -> None:
    server = flaky(["no-choices"])
    backend = _backend(server.base_url, "flaky", max_retries=2, extra={"retry_base_s": 0.01})
    with pytest.raises(BackendUnavailable, match="malformed reply.*no choices.*3 attempts"):
        await backend.complete(MESSAGES)
    assert server.hits == 3


async def test_it_retries_opening_a_stream(flaky: Any) -> None:
    server = flaky([429, 200])
    backend = _backend(server.base_url, "flaky")
    events = [e async for e in backend.stream(MESSAGES)]
    assert "".join(e.delta for e in events) == ANSWER
    assert len(events) == len(ANSWER.split(" ")) + 1
    assert events[-1].usage is not None and events[-1].usage.completion_tokens == 7
    assert server.bodies[-1]["stream_options"] == {"include_usage": True}


async def test_it_estimates_usage_when_the_stream_has_none(flaky: Any) -> None:
    server = flaky(["no-usage"])
    backend = _backend(server.base_url, "flaky")
    events = [e async for e in backend.stream(MESSAGES)]
    usage = events[-1].usage
    assert usage is not None
    assert usage.completion_tokens == approx_tokens(ANSWER)
    assert usage.prompt_tokens == approx_tokens(MESSAGES[0].content)


async def test_it_reports_a_failure_mid_stream_without_retrying(flaky: Any) -> None:
    server = flaky(["fail-mid-stream", 200])
    backend = _backend(server.base_url, "flaky", max_retries=3)
    pieces: list[str] = []
    with pytest.raises(BackendUnavailable) as info:
        async for event in backend.stream(MESSAGES):
            pieces.append(event.delta)
    assert pieces == ["The", " refund"]
    assert "failed mid-answer (CUDA out of memory)" in str(info.value)
    assert server.hits == 1
    assert backend.limiter.active == 0


async def test_it_reports_a_malformed_chunk_mid_stream_as_the_server_failing(flaky: Any) -> None:
    server = flaky(["garbage-mid-stream", 200])
    backend = _backend(server.base_url, "flaky", max_retries=3)
    pieces: list[str] = []
    with pytest.raises(BackendUnavailable) as info:
        async for event in backend.stream(MESSAGES):
            pieces.append(event.delta)
    assert pieces == ["The", " refund"]
    assert "failed mid-answer (malformed reply: a stream chunk whose choices" in str(info.value)
    assert server.hits == 1  # the text so far cannot be un-sent: no retry
    assert backend.limiter.active == 0


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (404, ModelNotFound, ["'flaky'", "was not found", SETTING, "HTTP 404"]),
        (401, BadRequest, ["API key", SETTING, "HTTP 401"]),
        (422, BadRequest, ["rejected the request", "HTTP 422", "scripted 422"]),
    ],
)
async def test_it_maps_client_errors_without_retrying(
    flaky: Any, status: int, error: type[Exception], words: list[str]
) -> None:
    server = flaky([status])
    backend = _backend(server.base_url, "flaky", max_retries=3)
    with pytest.raises(error) as info:
        await backend.complete(MESSAGES)
    assert server.hits == 1
    for word in words:
        assert word in str(info.value)


async def test_it_times_out_and_says_so(flaky: Any) -> None:
    server = flaky([("slow", 1.0)])
    backend = _backend(server.base_url, "flaky", timeout_s=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"timed out after 0\.3 s"):
        await backend.complete(MESSAGES)
    assert time.monotonic() - started < 1.5
    assert server.hits == 2


async def test_it_bounds_requests_in_flight(flaky: Any) -> None:
    server = flaky([("slow", 0.05)])
    backend = _backend(server.base_url, "flaky", max_concurrency=2)
    positions: list[int] = []
    results = await asyncio.gather(
        *(backend.complete(MESSAGES) for _ in range(5)),
        backend.complete(MESSAGES, on_queue=positions.append),
    )
    assert all(r.text == ANSWER for r in results)
    assert server.peak_in_flight == 2
    assert positions[0] == 4 and positions[-1] == 0


def test_it_works_from_several_event_loops(flaky: Any) -> None:
    # One cached backend is used by the ASGI loop and by worker threads with their own loops.
    server = flaky([200])
    backend = _backend(server.base_url, "flaky")

    async def ask() -> str:
        return (await backend.complete(MESSAGES)).text

    assert asyncio.run(ask()) == ANSWER
    assert asyncio.run(ask()) == ANSWER  # the first loop (and its connections) is closed now
    assert server.hits == 2


async def test_it_sends_the_generation_parameters(flaky: Any) -> None:
    server = flaky([200])
    backend = _backend(server.base_url, "flaky")
    await backend.complete(
        MESSAGES, GenerationParams(max_tokens=33, temperature=0.5, top_p=0.9, stop=("##",), seed=3)
    )
    body = server.bodies[0]
    assert body["model"] == "flaky"
    assert body["messages"] == [{"role": "user", "content": MESSAGES[0].content}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        33,
        0.5,
        0.9,
        ["##"],
        3,
    )
