"""The home page's sections: each app registers what its roles should see first.

raftweb.core sits below every app (corpus, training and chat import from it, never the other way
round), so the home page cannot ask them for their counts itself. Instead each app has a
``home.py`` module that registers sections here; :func:`sections_for` imports those modules on
first use (like Django's admin autodiscovery) and returns the sections a user's roles may see.
An app that is not installed simply contributes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftweb.core.roles import Role, user_has_role
from raftweb.registry import Registry


@dataclass(frozen=True, slots=True)
class HomeSection:
    """One card (or group of cards) on the home page.

    ``context(user)`` returns the template's context, or None when the section has nothing to
    show this user. ``order`` sorts sections across apps (lower first)."""

    name: str
    roles: tuple[Role, ...]
    template: str
    context: Callable[[Any], dict[str, Any] | None]
    order: int = 100


home_sections: Registry[HomeSection] = Registry("home section")

_discovered = False
_discover_lock = threading.Lock()


def home_section(
    name: str, *, roles: tuple[Role, ...], template: str, order: int = 100
) -> Callable[[Callable[[Any], dict[str, Any] | None]], Callable[[Any], dict[str, Any] | None]]:
    """Decorator: register ``fn(user) -> context | None`` as the home section ``name``."""

    def decorator(
        fn: Callable[[Any], dict[str, Any] | None],
    ) -> Callable[[Any], dict[str, Any] | None]:
        home_sections.add(name, HomeSection(name, roles, template, fn, order))
        return fn

    return decorator


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    with _discover_lock:
        if not _discovered:
            from django.utils.module_loading import autodiscover_modules

            autodiscover_modules("home")
            _discovered = True


def sections_for(user: Any) -> list[dict[str, Any]]:
    """The sections ``user`` may see, rendered-ready: ``{"name", "template", "context"}``."""
    _discover()
    out = []
    for section in sorted(home_sections.values(), key=lambda s: (s.order, s.name)):
        if not user_has_role(user, *section.roles):
            continue
        context = section.context(user)
        if context is not None:
            out.append({"name": section.name, "template": section.template, "context": context})
    return out
