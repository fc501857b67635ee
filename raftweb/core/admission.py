"""Admission control for the web process: at most N HTTP requests are *computed* at once.

Why: the ASGI server gives every request its own thread for Django's sync views. Under 200
concurrent API searches that made 200 runnable threads fight for one GIL, and the work of each
request grew from ~18 to ~49 ms (bench/load.py) - the crowd, not the work, set the pace. Here a
request past the limit waits as a coroutine on the event loop (no thread, no GIL turns) until a
slot frees, in arrival order.

A slot is taken once the request body has arrived (a slow upload never holds one while its
bytes trickle in) and given back when the response starts (a streamed answer or export keeps
no slot while it streams) or when the application returns. WebSockets and lifespan events pass
untouched: chat turns are bounded by their own search pool.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope


class AdmissionLimit:
    """ASGI middleware: at most ``limit`` HTTP requests between "body received" and "response
    started" at once (0 turns it off)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        # One semaphore per event loop (a server has one; tests may run several in turn).
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self.limit)
        return gate

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        gate = self._gate()
        held = False

        async def gated_receive() -> Any:
            nonlocal held
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body") and not held:
                await gate.acquire()
                held = True
            return message

        async def gated_send(message: Any) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and held:
                held = False
                gate.release()
            await send(message)

        try:
            await self.app(scope, gated_receive, gated_send)
        finally:
            if held:
                gate.release()
