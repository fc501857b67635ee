"""Reusable request threads for the ASGI handler: a request's synchronous work runs on a warm
thread borrowed from a pool, not on a thread made for it and joined after it.

Why: Django's ``ASGIHandler`` opens a ``ThreadSensitiveContext`` per request, whose executor
starts a new thread on the request's first synchronous call and joins it at the end. A new
thread also means a new database connection (Django keeps them per thread), so
``CONN_MAX_AGE`` never applied to web requests. py-spy on daphne under 200 concurrent API
searches: starting threads ~12% and opening SQLite connections ~13% of the process's samples.
With a pool, a request thread and its connection serve request after request, as under a WSGI
server's thread pool (close_old_connections still runs at each request's start and end).

A lease takes a thread only on its first synchronous call, so a request that waits for its
body or for admission (raftweb/core/admission.py) holds none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any


class RequestThreads:
    """Single-thread executors kept warm between requests: at most ``keep`` idle ones are kept;
    more are made while more requests run at once (and shut down when given back)."""

    def __init__(self, keep: int, *, name: str = "raftweb-request") -> None:
        self.keep = max(1, keep)
        self.name = name
        self._idle: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        self.made = 0  # executors made so far (tests and benchmarks read it)

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()  # the most recently used: warmest caches
            self.made += 1
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)

    def give(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(executor)
                return
        # A surplus thread may still finish a cancelled request's call: do not wait for it.
        executor.shutdown(wait=False)

    def lease(self) -> Lease:
        return Lease(self)

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


class Lease(Executor):
    """One request's executor: borrows a pooled thread on its first ``submit`` and gives it
    back on ``release``. Every call of the request runs on that one thread, in order, which is
    what ``ThreadSensitiveContext(executor=...)`` asks of an executor."""

    def __init__(self, pool: RequestThreads) -> None:
        self._pool = pool
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._executor is None:
            self._executor = self._pool.take()
        return self._executor.submit(fn, *args, **kwargs)

    def release(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            self._pool.give(executor)
