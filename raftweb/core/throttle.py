"""Brute-force protection and request rate limits, kept in the Django cache.

Two mechanisms, both counting in the cache so that several web processes share them when
``REDIS_URL`` makes the cache Redis (the embedded default is one process and local memory):

* **Failure lockout** (:func:`failure_record`, :func:`locked_for`): wrong passwords on the login
  page and bad API tokens. Failures are counted per *account* and per *client address*, each
  with its own limit; reaching a limit locks that key for ``AUTH_LOCKOUT_S`` seconds, doubling
  with every further lockout of the same key within a day (capped at a day). While locked,
  even the right password is refused (HTTP 429 with ``Retry-After``), and attempts made during
  a lockout are not counted, so a locked attacker cannot grow the counters of other accounts.
* **Rate limits** (:class:`UserRateThrottle`, :func:`rate_hit`): ``"N/period"`` per user for the
  expensive API operations (search, chat), plugged into django-ninja's throttling, which answers
  429 with ``Retry-After``; the chat WebSocket uses the same budget through :func:`rate_hit`.

Why not django-axes: it applies one failure limit to the largest of its counters, so the limit
per address could not be looser than the one per account (a shared office address would be
locked after a handful of typos); it sends no ``Retry-After``; and it needs a request in every
``authenticate()`` call and tables of its own. The logic here is a page long and tested.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from raftweb.core.rates import parse_rate

# Repeated lockouts of one key double the lockout, up to this.
MAX_LOCKOUT_S = 24 * 3600
# How long a key's lockout count ("strikes") is remembered.
STRIKE_MEMORY_S = 24 * 3600


def client_address(request: Any) -> str:
    """The caller's IP address. Behind ``RAFTWEB_TRUSTED_PROXIES`` reverse proxies that each
    append to ``X-Forwarded-For``, the address the outermost trusted proxy saw; otherwise the
    socket's peer. Entries a client wrote itself are never trusted."""
    meta = getattr(request, "META", {})
    remote = str(meta.get("REMOTE_ADDR") or "unknown")
    proxies = settings.TRUSTED_PROXIES
    if proxies <= 0:
        return remote
    forwarded = [a.strip() for a in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    forwarded = [a for a in forwarded if a]
    if not forwarded:
        return remote
    return forwarded[-min(proxies, len(forwarded))]


# ------------------------------------------------------------------------- failure lockout


@dataclass(frozen=True, slots=True)
class Counter:
    """One thing failures are counted for: ``kind`` (account, address) and its value."""

    kind: str
    value: str
    limit: int

    def key(self, scope: str, part: str) -> str:
        digest = hashlib.sha256(self.value.casefold().encode("utf-8", "replace")).hexdigest()
        return f"raftweb:fail:{scope}:{self.kind}:{digest[:40]}:{part}"


def locked_for(scope: str, counters: list[Counter]) -> int:
    """Seconds until every one of ``counters`` is unlocked (0: none is locked)."""
    now = time.time()
    keys = [c.key(scope, "lock") for c in counters]
    until = [float(v) for v in cache.get_many(keys).values() if v]
    return max((math.ceil(u - now) for u in until if u > now), default=0)


def failure_record(scope: str, counters: list[Counter]) -> int:
    """Count one failure for each counter; returns the lockout in seconds that this failure
    started (0: none)."""
    base = settings.AUTH_LOCKOUT_S
    locked = 0
    for counter in counters:
        if counter.limit <= 0:
            continue
        failures = _incr(counter.key(scope, "count"), base)
        if failures < counter.limit:
            continue
        strikes = _incr(counter.key(scope, "strikes"), STRIKE_MEMORY_S)
        duration = min(MAX_LOCKOUT_S, base * 2 ** min(strikes - 1, 20))
        cache.set(counter.key(scope, "lock"), time.time() + duration, duration)
        cache.delete(counter.key(scope, "count"))
        locked = max(locked, duration)
    return locked


def failures_clear(scope: str, counter: Counter) -> None:
    """Forget the failures counted for ``counter`` (not its lock or its strikes)."""
    cache.delete(counter.key(scope, "count"))


def _incr(key: str, timeout: int) -> int:
    """Atomic increment (cache ``add`` + ``incr``: atomic on Redis and in local memory)."""
    if cache.add(key, 1, timeout):
        return 1
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout)
        return 1


def login_counters(request: HttpRequest, username: str) -> list[Counter]:
    counters = [Counter("address", client_address(request), settings.LOGIN_ADDRESS_FAILURE_LIMIT)]
    if username.strip():
        counters.append(Counter("account", username.strip(), settings.LOGIN_FAILURE_LIMIT))
    return counters


def token_counters(request: HttpRequest) -> list[Counter]:
    return [Counter("address", client_address(request), settings.TOKEN_FAILURE_LIMIT)]


def wait_text(seconds: int) -> str:
    if seconds <= 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes <= 90:
        return f"{minutes} minutes"
    return f"{math.ceil(minutes / 60)} hours"


# ----------------------------------------------------------------------------- rate limits


def rate_hit(scope: str, ident: str) -> int:
    """Count one request of ``ident`` against the ``scope`` rate (``settings.RATE_LIMITS``);
    returns 0 when it is allowed, else the seconds until the next one would be.

    A fixed window per period, counted with the cache's atomic increment, so that concurrent
    requests in several processes cannot slip past the limit together.
    """
    rate = settings.RATE_LIMITS.get(scope)
    parsed = parse_rate(rate) if isinstance(rate, str) else rate
    if not parsed:
        return 0
    limit, period = parsed
    now = time.time()
    window = int(now // period)
    count = _incr(f"raftweb:rate:{scope}:{ident}:{window}", period + 1)
    if count <= limit:
        return 0
    return max(1, math.ceil((window + 1) * period - now))


def user_ident(user: Any, request: Any = None) -> str:
    pk = getattr(user, "pk", None)
    if pk is not None and getattr(user, "is_authenticated", False):
        return f"user:{pk}"
    return f"addr:{client_address(request)}"


class UserRateThrottle(BaseThrottle):
    """django-ninja throttle: ``scope``'s rate per user. All of a user's tokens and their
    browser session share one budget (creating more tokens does not raise it).

    The rate is read from the settings on every request (so it can be changed in tests), and
    the wait is kept per thread: ninja shares one throttle object between requests."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self._local = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        user = getattr(request, "auth", None) or getattr(request, "user", None)
        wait = rate_hit(self.scope, user_ident(user, request))
        self._local.wait = wait
        return wait == 0

    def wait(self) -> float | None:
        return getattr(self._local, "wait", None) or None
