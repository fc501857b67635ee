"""The one family of user-facing errors.

Every service, engine module and endpoint raises a :class:`RaftwebError` (or a subclass) built
the same way: ``Error(message, code=..., status=..., details=...)``. The message is safe to
show; ``code`` is a stable machine word; ``status`` is the HTTP status the API answers with.
One handler in :mod:`raftweb.api` turns any of them into the one JSON error shape
``{"error": {"code", "message", "details"}}``; pages show the message. Nothing chooses a status
by matching message text: a subclass (or an explicit ``status``) carries it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar


class RaftwebError(Exception):
    """A failure the user can act on. Subclasses set the default code and status."""

    default_code: ClassVar[str] = "invalid"
    default_status: ClassVar[int] = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status or self.default_status
        self.details = details or {}
        # Extra HTTP response headers (e.g. Retry-After), set by subclasses.
        self.headers: dict[str, str] = {}

    def as_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class Invalid(RaftwebError):
    """Bad input (400); ``status=422`` for a well-formed request with invalid values."""


class Unauthorized(RaftwebError):
    default_code, default_status = "unauthorized", 401


class Forbidden(RaftwebError):
    default_code, default_status = "forbidden", 403


class NotFound(RaftwebError):
    default_code, default_status = "not_found", 404


class Conflict(RaftwebError):
    default_code, default_status = "conflict", 409


class TooLarge(RaftwebError):
    default_code, default_status = "too_large", 413


class RateLimited(RaftwebError):
    """Too many requests (429); ``retry_after`` seconds go out as the ``Retry-After`` header."""

    default_code, default_status = "rate_limited", 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        if retry_after is not None:
            seconds = max(1, int(-(-retry_after // 1)))  # ceil, at least 1
            self.details.setdefault("retry_after", seconds)
            self.headers["Retry-After"] = str(seconds)


class Unavailable(RaftwebError):
    """A backing service (model server, vector store, database) cannot be reached."""

    default_code, default_status = "unavailable", 503


class UpstreamError(RaftwebError):
    """A model server answered, but not usefully."""

    default_code, default_status = "model_error", 502


class StorageFull(RaftwebError):
    """The disk filled up while something was being written; nothing half-written was kept."""

    default_code, default_status = "storage_full", 507


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the operating system saying there is no room left (disk or quota)."""
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Internal(RaftwebError):
    default_code, default_status = "internal", 500


# Where a service lives (model servers, vector stores) is for admins and logs, not for every user.
_ADDRESS_RE = re.compile(
    r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()]+"  # a URL
    r"|\[[0-9a-fA-F:.]+\](?::\d{1,5})?"  # [IPv6]:port
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"  # IPv4[:port]
    r"|\b[a-zA-Z0-9-]*[a-zA-Z][a-zA-Z0-9-]*(?:\.[a-zA-Z0-9-]+)*:\d{2,5}\b"  # host:port
)
ADDRESS_HIDDEN = "[server address hidden]"


def redact_addresses(text: str) -> str:
    """``text`` with URLs, IP addresses and host:port pairs replaced by a placeholder.

    Error messages name the model server they could not reach; users who are not admins see
    that it failed, not where it lives (the full text goes to the log)."""
    return _ADDRESS_RE.sub(ADDRESS_HIDDEN, text)
