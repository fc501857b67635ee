"""The audit log of admin actions: who created, launched, activated or deleted what, and when.

Services record their own actions with one line, ``audit(actor, "kb.delete", kb)``, so a
change made from a page, the API or a management command is recorded the same way. Services
that take no ``user`` argument pass ``None``: the actor is then the user of the request being
served (set by :class:`AuditActorMiddleware`, read when the event is written, so an API token
user resolved after the middleware ran is seen too), or "system" outside a request (commands,
the worker).

Details are stored as JSON after a pass that drops secrets by key name: an endpoint key must
never reach the log, whatever a caller passes.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

log = logging.getLogger("raftweb.audit")

# The request being served, for the actor of events whose service has no user argument.
_current_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "raftweb_audit_request", default=None
)
# An explicit actor (management commands acting as a named user), wins over the request.
_current_actor: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "raftweb_audit_actor", default=None
)

SECRET_KEYS = ("api_key", "password", "token", "secret", "authorization")
MAX_DETAIL_CHARS = 500

# Every action the services record, with the words the audit page shows (and filters by).
ACTIONS: dict[str, str] = {
    "kb.create": "created knowledge base",
    "kb.delete": "deleted knowledge base",
    "document.upload": "uploaded document",
    "document.delete": "deleted document",
    "generation.start": "started generation job",
    "generation.cancel": "cancelled generation job",
    "generation.resume": "resumed generation job",
    "dataset.import": "imported Q&A pairs",
    "dataset.export": "exported Q&A pairs",
    "review.bulk": "bulk review action",
    "training.start": "started training run",
    "training.cancel": "cancelled training run",
    "training.resume": "resumed training run",
    "model_version.activate": "activated model version",
    "evaluation.start": "started evaluation run",
    "evaluation.cancel": "cancelled evaluation run",
    "evaluation.resume": "resumed evaluation run",
    "evaluation.import": "imported evaluation question set",
    "model_version.merge": "merged model version",
    "embedding.activate": "activated embedding version",
    "profile.update": "edited model profile",
    "token.create": "created API token",
    "token.revoke": "revoked API token",
    "user.create": "created user",
    "user.role": "changed user role",
    "kb.export": "exported knowledge base",
    "kb.import": "imported knowledge base",
}


def _is_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in SECRET_KEYS)


def _clean(value: Any) -> Any:
    """JSON-safe, bounded, and without secrets (by key name)."""
    if isinstance(value, dict):
        return {
            str(k): ("[redacted]" if _is_secret(str(k)) else _clean(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in list(value)[:50]]
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:MAX_DETAIL_CHARS]


def _actor_of(actor: Any) -> Any:
    if actor is None:
        actor = _current_actor.get()
    if actor is None:
        request = _current_request.get()
        actor = getattr(request, "user", None) if request is not None else None
    if actor is None or not getattr(actor, "is_authenticated", False):
        return None
    return actor


def _target_of(target: Any) -> tuple[str, str, str, str]:
    """(type, id, label, kb slug) of a model instance, or of a ``(type, id, label)`` tuple."""
    if target is None:
        return "", "", "", ""
    if isinstance(target, tuple):
        kind, ident, label = (list(target) + ["", "", ""])[:3]
        return str(kind), str(ident), str(label), ""
    meta = getattr(target, "_meta", None)
    kind = meta.model_name if meta is not None else type(target).__name__.lower()
    kb_slug = ""
    if kind == "knowledgebase":
        kb_slug = str(getattr(target, "slug", ""))
    elif getattr(target, "kb_id", None) is not None:
        kb_slug = str(getattr(target.kb, "slug", ""))
    return kind, str(getattr(target, "pk", "") or ""), str(target)[:300], kb_slug


def audit(actor: Any, action: str, target: Any = None, **details: Any) -> Any:
    """Record one admin action. ``target`` is a model instance (type, id, label and knowledge
    base are read from it: call before deleting it) or a ``(type, id, label)`` tuple;
    ``kb=<KnowledgeBase or slug>`` files the event under a knowledge base explicitly."""
    from raftweb.core.models import AuditEvent

    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; add it to raftweb.core.audit.ACTIONS")
    user = _actor_of(actor)
    kind, ident, label, kb_slug = _target_of(target)
    kb = details.pop("kb", None)
    if kb is not None:
        kb_slug = str(getattr(kb, "slug", kb))
    event = AuditEvent.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else "",
        action=action,
        target_type=kind,
        target_id=ident[:64],
        target_label=label[:300],
        kb_slug=kb_slug[:120],
        details=_clean(details),
    )
    log.info(
        "audit %s by %s: %s %s %r",
        action,
        event.actor_name or "system",
        kind,
        ident,
        label[:100],
    )
    return event


def audit_events(*, actor: str = "", action: str = "", kb: str = "") -> Any:
    """The events matching the audit page's filters, newest first (exact actor name, action
    or action family such as ``kb``, knowledge base slug)."""
    from raftweb.core.models import AuditEvent

    qs = AuditEvent.objects.all()
    if actor:
        qs = qs.filter(actor_name=actor)
    if action:
        qs = (
            qs.filter(action=action)
            if "." in action
            else qs.filter(action__startswith=action + ".")
        )
    if kb:
        qs = qs.filter(kb_slug=kb)
    return qs


def audit_actor_names() -> list[str]:
    from raftweb.core.models import AuditEvent

    names = AuditEvent.objects.exclude(actor_name="").order_by("actor_name")
    return list(names.values_list("actor_name", flat=True).distinct())


@contextmanager
def acting_as(user: Any) -> Iterator[None]:
    """Attribute the events recorded inside to ``user`` (management commands, tests)."""
    token = _current_actor.set(user)
    try:
        yield
    finally:
        _current_actor.reset(token)


class AuditActorMiddleware:
    """Makes the request's user the actor of audit events recorded while serving it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = _current_request.set(request)
        try:
            return await self.get_response(request)
        finally:
            _current_request.reset(token)
