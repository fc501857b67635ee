"""A process's "stop now" gate for long work units (generation runs, ingestions, training
watches): the worker's shutdown hook closes it and waits, a few seconds at most, for every
unit in flight to hand its work back; each unit checks it between steps.

One mechanism, one place: each worker-side module owns one :class:`StopGate`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StopGate:
    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._active = 0

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: units should hand their work back."""
        return self._stopping.is_set()

    def stop(self, *, timeout: float) -> bool:
        """Close the gate and wait at most ``timeout`` s; True if no unit is left running."""
        self._stopping.set()
        with self._changed:
            return self._changed.wait_for(lambda: self._active == 0, timeout=timeout)

    def reopen(self) -> None:
        """Open the gate again (tests that stopped "the worker" before the next one starts)."""
        self._stopping.clear()

    @contextmanager
    def tracked(self) -> Iterator[None]:
        """Count one unit in flight for :meth:`stop` to wait on."""
        with self._changed:
            self._active += 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                self._changed.notify_all()
