"""A fair (FIFO) concurrency limiter that works from any event loop and knows its queue.

Why not ``asyncio.Semaphore``: a semaphore binds to the event loop that first waits on it,
but one backend instance is shared by the ASGI server's loop, Huey worker threads that each
run their own loop, and tests that start a loop per test. This limiter keeps its state
under a ``threading.Lock`` and wakes each waiter on the waiter's own loop with
``call_soon_threadsafe``, so it is safe to share across loops and threads. Being FIFO, it can
also tell each waiter its place in the queue, which chat shows to the user.

Usage::

    async with limiter.slot(on_queue=lambda pos: print("position", pos)):
        ...  # at most ``capacity`` callers are in here at once

``on_queue(position)`` is called on the caller's loop with 1, 2, ... while the caller waits
(1 = next in line; called again each time the queue moves) and with 0 when the caller gets
its slot. It is only called at all if the caller had to wait. It may be a plain function or
return an awaitable (which is scheduled as a task, never awaited inline).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)
_CALLBACK_TASKS: set[asyncio.Future[object]] = set()

QueueCallback = Callable[[int], Awaitable[None] | None]


@dataclass(eq=False, slots=True)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    on_queue: QueueCallback | None


def _notify(waiter: _Waiter, position: int) -> None:
    """Run ``on_queue`` on the waiter's loop; a failing callback must not break the queue."""
    if waiter.on_queue is None:
        return

    def call() -> None:
        try:
            result = waiter.on_queue(position)  # type: ignore[misc]
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                # Keep a reference until done: the loop only holds tasks weakly.
                _CALLBACK_TASKS.add(task)
                task.add_done_callback(_CALLBACK_TASKS.discard)
        except Exception:  # a UI callback must never stall generation: log and go on
            logger.exception("on_queue callback failed")

    # A closed loop means the waiter is gone and nobody is listening any more.
    with contextlib.suppress(RuntimeError):
        waiter.loop.call_soon_threadsafe(call)


class FairLimiter:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._mutex = threading.Lock()
        self._active = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def active(self) -> int:
        """How many callers hold a slot now."""
        return self._active

    @property
    def waiting(self) -> int:
        """How many callers are queued for a slot now."""
        return len(self._waiters)

    def position_of_next(self) -> int:
        """The queue position a caller arriving now would get (0 = served at once)."""
        with self._mutex:
            if self._active < self.capacity and not self._waiters:
                return 0
            return len(self._waiters) + 1

    async def acquire(self, on_queue: QueueCallback | None = None) -> None:
        loop = asyncio.get_running_loop()
        with self._mutex:
            if self._active < self.capacity and not self._waiters:
                self._active += 1
                return
            waiter = _Waiter(loop, loop.create_future(), on_queue)
            self._waiters.append(waiter)
            position = len(self._waiters)
        _notify(waiter, position)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._mutex:
                if waiter in self._waiters:
                    # Still queued: just leave the queue; those behind move up.
                    self._waiters.remove(waiter)
                    self._renumber_locked()
                    raise
            # The slot was handed to us just as we were cancelled: pass it on.
            if waiter.future.done() and not waiter.future.cancelled():
                self.release()
            raise
        _notify(waiter, 0)

    def release(self) -> None:
        with self._mutex:
            while self._waiters:
                waiter = self._waiters.popleft()
                # The slot moves straight to the next waiter (``_active`` is unchanged), so
                # no newcomer can jump the queue between release and wake-up.
                if self._hand_over_locked(waiter):
                    self._renumber_locked()
                    return
            self._active -= 1

    def _hand_over_locked(self, waiter: _Waiter) -> bool:
        def grant() -> None:
            if waiter.future.done():  # cancelled meanwhile: give the slot to the next one
                self.release()
            else:
                waiter.future.set_result(None)

        try:
            waiter.loop.call_soon_threadsafe(grant)
        except RuntimeError:  # loop closed: that waiter is gone
            return False
        return True

    def _renumber_locked(self) -> None:
        for index, waiter in enumerate(self._waiters, start=1):
            _notify(waiter, index)

    @asynccontextmanager
    async def slot(self, on_queue: QueueCallback | None = None) -> AsyncIterator[None]:
        await self.acquire(on_queue)
        try:
            yield
        finally:
            self.release()
