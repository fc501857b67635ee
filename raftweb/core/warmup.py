"""Load the embedding model when the web process starts, in the background.

Loading sentence-transformers takes seconds (7-10 s on a busy small machine). Done lazily, the
first search after a start paid for it with no sign of progress; done here, in a daemon thread
started by raftweb/asgi.py (the web process only: not the worker, not management commands), the
process answers at once and the model is usually ready before anyone searches. A search that
comes earlier simply waits for the same load (``load_embedder`` loads each model once per
process, under a lock).

/api/health says where it stands (raftweb/core/health.py): for logged-in users the embedding
check's detail reads "loading…" or "loaded", and ``data.warm`` is "loading", "ready",
"failed" or "off"; anonymous callers still see only whether it is up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_state: dict[str, Any] = {"warm": "off", "detail": "", "model": ""}
_thread: threading.Thread | None = None
_web_process = False


def mark_web_process() -> None:
    """Called by raftweb/asgi.py: this process serves web requests (see :func:`query_batching`)."""
    global _web_process
    _web_process = True


def query_batching() -> dict[str, Any]:
    """How this process's embedders batch and where they encode queries (settings; the query
    child process is on by default in the web process only - RAFTWEB_EMBED_PROCESS)."""
    process = settings.EMBED_PROCESS
    return {
        "max_batch": settings.EMBED_BATCH_SIZE,
        "max_wait_ms": settings.EMBED_BATCH_WAIT_MS,
        "threads": settings.EMBED_THREADS,
        "process": _web_process if process is None else process,
    }


def warmup_state() -> dict[str, Any]:
    with _lock:
        return dict(_state)


def _set(**values: Any) -> None:
    with _lock:
        _state.update(values)


def _model_name() -> str:
    """The 'embedding' profile's model (what every KB without a model of its own uses)."""
    from django.db import connection

    from raftweb.core.services import profile_spec

    try:
        return profile_spec("embedding").model
    finally:
        connection.close()  # this thread's own connection: never left open


def embedding_warmup() -> None:
    """Load the embedding model now (in the calling thread); never raises."""
    from raftweb.retrieval.embedder import load_embedder

    started = time.monotonic()
    _set(warm="loading", detail="loading the embedding model in the background", model="")
    try:
        name = _model_name()
        _set(model=name)
        embedder = load_embedder(name, setting="the 'embedding' model profile (Settings → Models)")
        embedder.configure_batching(**query_batching())
        # Encode one query now: that starts the query process where there is one (its own
        # model load), so the first real search pays for neither.
        embedder.encode_queries(["warm-up"])
    except Exception as exc:  # noqa: BLE001 - reported by health; a search will say it again
        log.warning("embedding model warm-up failed: %s", exc)
        _set(warm="failed", detail=f"could not be loaded at start-up: {exc}")
        return
    if _web_process:
        _settle_heap()
    seconds = time.monotonic() - started
    log.info("embedding model %s loaded in %.1f s", name, seconds)
    _set(warm="ready", detail=f"loaded in this process ({seconds:.1f} s at start-up)")


def _settle_heap() -> None:
    """Import the URL configuration, then exempt everything loaded so far from the cyclic
    garbage collector's scans (``gc.freeze``).

    Why: the web process holds millions of start-up objects (Django, torch, transformers, the
    model) that live as long as it does, and every full collection walked all of them: pauses
    of 80-360 ms on the event loop under 50 concurrent chats, on 2 cores. The URL
    configuration is otherwise imported by the first ``reverse()``, which for a WebSocket-only
    first visitor is the first chat answer (~1 s on the event loop)."""
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imported for its side effect
    gc.collect()
    gc.freeze()


def start_embedding_warmup() -> threading.Thread | None:
    """Start :func:`embedding_warmup` in a daemon thread, once per process, if
    ``RAFTWEB_EMBEDDING_WARMUP`` is on. Returns the thread (None when off or started)."""
    global _thread
    if not settings.EMBEDDING_WARMUP:
        return None
    with _lock:
        if _thread is not None:
            return None
        _state.update(warm="loading", detail="loading the embedding model in the background")
        _thread = threading.Thread(target=embedding_warmup, name="embedding-warmup", daemon=True)
    _thread.start()
    return _thread
