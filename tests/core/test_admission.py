"""The web process's admission limit: at most N HTTP requests computed at once, the rest wait
as coroutines; slow bodies and streamed responses hold no slot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftweb.core.admission import AdmissionLimit


class App:
    """An ASGI app that reads the body, 'computes' for ``work_s`` and answers; it records how
    many requests were computing at once."""

    def __init__(self, work_s: float = 0.02, stream_s: float = 0.0) -> None:
        self.work_s = work_s
        self.stream_s = stream_s
        self.inside = 0
        self.peak = 0
        self.done = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.accept"})
            return
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        await asyncio.sleep(self.work_s)
        self.inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if self.stream_s:
            await asyncio.sleep(self.stream_s)  # streaming the body: no slot held
        await send({"type": "http.response.body", "body": b"ok"})
        self.done += 1


def request(body_parts: int = 1, gap_s: float = 0.0) -> tuple[Any, Any, list[Any]]:
    parts = [
        {"type": "http.request", "body": b"x", "more_body": i < body_parts - 1}
        for i in range(body_parts)
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        if parts:
            if gap_s:
                await asyncio.sleep(gap_s)
            return parts.pop(0)
        await asyncio.sleep(3600)  # http.disconnect never comes in these tests
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    return receive, send, sent


def run(app: Any, n: int, **kw: Any) -> list[list[Any]]:
    async def main() -> list[list[Any]]:
        reqs = [request(**kw) for _ in range(n)]
        await asyncio.gather(*(app({"type": "http"}, r, s) for r, s, _ in reqs))
        return [sent for _, _, sent in reqs]

    return asyncio.run(main())


def test_at_most_limit_requests_compute_at_once_and_all_finish() -> None:
    inner = App(work_s=0.01)
    results = run(AdmissionLimit(inner, 3), 40)
    assert inner.peak == 3
    assert inner.done == 40
    assert all(sent[0]["status"] == 200 and sent[-1]["body"] == b"ok" for sent in results)


def test_without_a_limit_all_compute_at_once() -> None:
    inner = App(work_s=0.01)
    run(AdmissionLimit(inner, 0), 40)
    assert inner.peak == 40


def test_a_streaming_response_gives_its_slot_back_when_it_starts() -> None:
    # One slot; each response streams for 0.2 s after it starts. Were the slot held while
    # streaming, 10 requests would take >= 2 s.
    inner = App(work_s=0.001, stream_s=0.2)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        app = AdmissionLimit(inner, 1)
        reqs = [request() for _ in range(10)]
        await asyncio.gather(*(app({"type": "http"}, r, s) for r, s, _ in reqs))
        return loop.time() - start

    assert asyncio.run(main()) < 1.0
    assert inner.done == 10


def test_a_slow_body_holds_no_slot() -> None:
    # One slot. A request whose body arrives over 1 s must not keep fast requests out.
    inner = App(work_s=0.001)

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        app = AdmissionLimit(inner, 1)
        slow_r, slow_s, _ = request(body_parts=5, gap_s=0.2)
        slow = asyncio.create_task(app({"type": "http"}, slow_r, slow_s))
        await asyncio.sleep(0.05)
        start = loop.time()
        reqs = [request() for _ in range(5)]
        await asyncio.gather(*(app({"type": "http"}, r, s) for r, s, _ in reqs))
        fast = loop.time() - start
        await slow
        return fast, loop.time() - start

    fast, total = asyncio.run(main())
    assert fast < 0.3
    assert total >= 0.7
    assert inner.done == 6


def test_a_failing_request_gives_its_slot_back() -> None:
    class Boom(App):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await receive()
            raise RuntimeError("boom")

    app = AdmissionLimit(Boom(), 1)

    async def main() -> None:
        for _ in range(3):
            r, s, _ = request()
            with pytest.raises(RuntimeError):
                await asyncio.wait_for(app({"type": "http"}, r, s), 1)

    asyncio.run(main())  # a leaked slot would make the second call time out


def test_websockets_pass_untouched() -> None:
    inner = App()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    asyncio.run(AdmissionLimit(inner, 1)({"type": "websocket"}, receive, send))
    assert sent == [{"type": "websocket.accept"}]


def test_the_served_application_is_limited(settings: Any) -> None:
    from raftweb import asgi

    http = asgi.application.application_mapping["http"]
    assert isinstance(http, AdmissionLimit)
    assert http.limit == settings.HTTP_CONCURRENCY > 0
