"""A per-process memo for rows that every request reads and that rarely change.

Why: every chat turn re-read its knowledge base's generator (active version, student profile)
and search set-up (embedding version, embedding profile): a few milliseconds of ORM work per
turn that queued on Django's one ORM thread behind every other conversation's writes. Under
50 concurrent questions on 2 cores the last turn learned its model two seconds after it asked
(bench/chat.py).

Semantics:
- an entry is fresh for ``ttl_s()`` seconds; after that the first caller reloads it while the
  others keep using the old value (no burst of identical reloads, no caller waits for one);
- concurrent first loads of a key are one load (the others await it); a failed load is not
  kept, so the next caller tries again;
- :meth:`Memo.clear` forgets everything, and a load that started before the clear does not
  store its (possibly stale) result. Callers clear on the signals of the rows behind the memo,
  so a change made in this process applies at once; other processes see it within the TTL.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, ttl_s: Callable[[], float], *, name: str = "memo") -> None:
        self.ttl_s = ttl_s
        self.name = name
        self._lock = threading.Lock()
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, Future[V]] = {}
        self._epoch = 0
        self.loads = 0  # how many times a loader ran (tests read it)
        _ALL.add(self)

    async def aget(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The value for ``key``, loading it with ``load()`` when absent or expired."""
        while True:
            ttl = self.ttl_s()
            with self._lock:
                entry = self._entries.get(key)
                pending = self._loading.get(key)
                if entry is not None and (time.monotonic() - entry[0] < ttl or pending):
                    return entry[1]
                if pending is None:
                    mine: Future[V] = Future()
                    self._loading[key] = mine
                    epoch = self._epoch
            if pending is None:
                return await self._load(key, load, mine, epoch)
            try:  # someone else loads the first value: wait for it
                return await asyncio.wrap_future(pending)
            except _LoaderCancelled:
                continue  # its caller went away (a stopped turn): load it ourselves

    def get(self, key: K, load: Callable[[], V]) -> V:
        """:meth:`aget` for threads: ``load()`` is a plain function, waiting blocks."""
        while True:
            ttl = self.ttl_s()
            with self._lock:
                entry = self._entries.get(key)
                pending = self._loading.get(key)
                if entry is not None and (time.monotonic() - entry[0] < ttl or pending):
                    return entry[1]
                if pending is None:
                    mine: Future[V] = Future()
                    self._loading[key] = mine
                    epoch = self._epoch
            if pending is not None:
                try:
                    return pending.result()
                except _LoaderCancelled:
                    continue
            self.loads += 1
            try:
                value = load()
            except BaseException as exc:
                self._failed(key, mine, exc)
                raise
            self._store(key, mine, epoch, value)
            return value

    async def _load(
        self, key: K, load: Callable[[], Awaitable[V]], future: Future[V], epoch: int
    ) -> V:
        self.loads += 1
        try:
            value = await load()
        except BaseException as exc:
            self._failed(key, future, exc)
            raise
        self._store(key, future, epoch, value)
        return value

    def _failed(self, key: K, future: Future[V], exc: BaseException) -> None:
        with self._lock:
            if self._loading.get(key) is future:
                del self._loading[key]
        cancelled = isinstance(exc, asyncio.CancelledError)
        future.set_exception(_LoaderCancelled() if cancelled else exc)

    def _store(self, key: K, future: Future[V], epoch: int, value: V) -> None:
        with self._lock:
            if self._loading.get(key) is future:
                del self._loading[key]
            if epoch == self._epoch and self.ttl_s() > 0:
                self._entries[key] = (time.monotonic(), value)
        future.set_result(value)

    def clear(self, *_args: object, **_kwargs: object) -> None:
        """Forget every entry (usable as a signal receiver)."""
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._loading.clear()


_ALL: weakref.WeakSet[Memo[Any, Any]] = weakref.WeakSet()


def clear_all() -> None:
    """Forget the entries of every memo in the process (a setting changed; between tests)."""
    for memo in list(_ALL):
        memo.clear()


class _LoaderCancelled(Exception):
    """The caller that was loading a value was cancelled; a waiter loads it instead."""
