"""Health checks behind GET /api/health: database, worker, vector store, model backends.

Each check is bounded in time and never raises: a health page that crashes when a
dependency is down would hide exactly the information it exists to show.

The report is cached for ``HEALTH_CACHE_S`` seconds (and recomputed at once when a model profile
changes), so that calling /api/health in a loop does not probe the model servers in a loop.
Anonymous callers see only whether each part is up (:func:`public_report`); the details (host
names, paths, model servers) need a login, and server addresses need an admin.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str
    data: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["data"] is None:
            out.pop("data")
        return out


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check(True, f"{connection.vendor} reachable")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return Check(False, f"database unreachable: {exc}")


def check_worker() -> Check:
    from raftweb.core.models import WorkerHeartbeat

    if settings.HUEY.get("immediate"):
        return Check(True, "jobs run in-process (immediate mode)")
    try:
        beat = WorkerHeartbeat.objects.order_by("-beat_at").first()
    except Exception as exc:  # noqa: BLE001
        return Check(False, f"cannot read worker heartbeat: {exc}")
    if beat is None:
        return Check(
            False, "no worker has reported yet (start one with `python manage.py run_huey`)"
        )
    age = timezone.now() - beat.beat_at
    if age > timedelta(seconds=settings.WORKER_HEARTBEAT_STALE_S):
        return Check(False, f"last worker heartbeat {int(age.total_seconds())}s ago ({beat.name})")
    return Check(True, f"worker alive ({beat.name}, {int(age.total_seconds())}s ago)")


def check_vector_store() -> Check:
    try:
        import chromadb

        if settings.CHROMA_URL:
            from urllib.parse import urlsplit

            url = urlsplit(settings.CHROMA_URL)
            client = chromadb.HttpClient(
                host=url.hostname or "127.0.0.1",
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
            )
            client.heartbeat()
            return Check(True, f"Chroma server at {settings.CHROMA_URL}")
        settings.CHROMA_PATH.mkdir(parents=True, exist_ok=True)
        return Check(True, f"embedded Chroma at {settings.CHROMA_PATH}")
    except Exception as exc:  # noqa: BLE001
        where = settings.CHROMA_URL or settings.CHROMA_PATH
        return Check(False, f"vector store unavailable at {where}: {exc} (check CHROMA_URL)")


def embedding_health(spec: Any) -> Any:
    """Whether the embedding model can be loaded here, without loading it."""
    from raftweb.llm import BackendHealth
    from raftweb.retrieval.embedder import resolve_model_path

    try:
        where = resolve_model_path(spec.model)
    except Exception as exc:  # noqa: BLE001 - the message names the setting
        return BackendHealth(False, str(exc))
    return BackendHealth(True, f"available at {where}")


def _with_warmup(health: Any, spec: Any, label: str) -> Check:
    """The embedding check, plus whether this process has loaded the model yet (the start-up
    warm-up, raftweb/core/warmup.py): ``data.warm`` is loading, ready, failed or off."""
    from raftweb.core.warmup import warmup_state

    warm = warmup_state()
    if warm["model"] and warm["model"] != spec.model:  # the profile changed since start-up
        warm = {"warm": "off", "detail": ""}
    ok = health.ok and warm["warm"] != "failed"
    detail = f"{health.detail}; {warm['detail']}" if warm["detail"] else health.detail
    return Check(ok, detail, {"model": label, "warm": warm["warm"]})


async def check_models() -> dict[str, Check]:
    from raftweb.core.services import profile_to_spec, profiles_ensure
    from raftweb.llm import backend_class

    profiles = await sync_to_async(profiles_ensure)()

    async def one(profile: Any) -> tuple[str, Check]:
        spec = profile_to_spec(profile)
        label = f"{spec.backend}:{spec.model}"
        try:
            if profile.role == "embedding":
                health = await asyncio.to_thread(embedding_health, spec)
                return profile.role, _with_warmup(health, spec, label)
            else:
                # A fresh, unshared instance (nothing is loaded by health()): the shared one may
                # serve several roles and would name another role's setting in its message.
                backend = backend_class(spec.backend, setting=spec.setting)(spec)
                try:
                    health = await asyncio.wait_for(backend.health(), CHECK_TIMEOUT_S)
                finally:
                    await backend.aclose()
            return profile.role, Check(health.ok, health.detail, {"model": label})
        except TimeoutError:
            return profile.role, Check(
                False, f"no answer within {CHECK_TIMEOUT_S:.0f}s", {"model": label}
            )
        except Exception as exc:  # noqa: BLE001 - unknown backend, bad spec…: say so
            return profile.role, Check(False, str(exc), {"model": label})

    results = await asyncio.gather(*(one(p) for p in profiles))
    return dict(results)


async def health_report() -> dict[str, Any]:
    database, worker, vector_store = await asyncio.gather(
        sync_to_async(check_database)(),
        sync_to_async(check_worker)(),
        asyncio.to_thread(check_vector_store),
    )
    models = await check_models() if database.ok else {}
    # Models being unavailable is reported but is not "down": the app still serves
    # curation and review; only the database and the vector store are vital.
    ok = database.ok and vector_store.ok
    return {
        "status": "ok" if ok else "error",
        "database": database.as_dict(),
        "worker": worker.as_dict(),
        "vector_store": vector_store.as_dict(),
        "models": {role: check.as_dict() for role, check in models.items()},
    }


# One probe at a time per process and event loop: concurrent callers of a stale report wait
# for it instead of each probing the model servers.
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def _profiles_fingerprint() -> str:
    """Changes whenever a model profile is created or edited (the report names them)."""
    from django.db.models import Count, Max

    from raftweb.core.models import ModelProfile

    try:
        agg = await ModelProfile.objects.aaggregate(n=Count("id"), last=Max("updated_at"))
    except Exception:  # noqa: BLE001 - the database check in the report says what is wrong
        return "unknown"
    return f"{agg['n']}:{agg['last'].isoformat() if agg['last'] else ''}"


async def cached_health_report() -> dict[str, Any]:
    ttl = settings.HEALTH_CACHE_S
    if ttl <= 0:
        return await health_report()
    key = f"raftweb:health:{await _profiles_fingerprint()}"
    report = await cache.aget(key)
    if report is not None:
        return report
    lock = _LOCKS.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        report = await cache.aget(key)
        if report is None:
            report = await health_report()
            await cache.aset(key, report, ttl)
    return report


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    """What anyone may know: up or down, per part, without a word about where or what."""
    return {
        "status": report["status"],
        "database": {"ok": report["database"]["ok"]},
        "worker": {"ok": report["worker"]["ok"]},
        "vector_store": {"ok": report["vector_store"]["ok"]},
        "models": {role: {"ok": check["ok"]} for role, check in report["models"].items()},
    }


def redacted_report(report: dict[str, Any]) -> dict[str, Any]:
    """The details without server addresses (for logged-in users who are not admins)."""
    from raftweb.errors import redact_addresses

    def clean(check: dict[str, Any]) -> dict[str, Any]:
        return {**check, "detail": redact_addresses(check.get("detail", ""))}

    return {
        "status": report["status"],
        "database": clean(report["database"]),
        "worker": clean(report["worker"]),
        "vector_store": clean(report["vector_store"]),
        "models": {role: clean(check) for role, check in report["models"].items()},
    }
