"""Roles are Django groups carrying a fixed set of permissions.

Checks go through :func:`user_has_role` so that the rule "superusers may do everything"
lives in one place, and views/API/consumers never test group names themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from django.core.exceptions import PermissionDenied


class Role(StrEnum):
    ADMIN = "admin"
    REVIEWER = "reviewer"
    SUPPORT = "support"


# codename -> description; declared on core.Access so Django creates the rows.
PERMISSIONS: dict[str, str] = {
    "manage_corpus": "Manage knowledge bases and documents",
    "manage_models": "Edit model profiles",
    "manage_training": "Launch generation, training and evaluation",
    "review_pairs": "Review generated Q&A pairs",
    "use_chat": "Chat with knowledge bases",
}

ROLE_PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.ADMIN: tuple(PERMISSIONS),
    Role.REVIEWER: ("review_pairs",),
    Role.SUPPORT: ("use_chat",),
}


def ensure_role_groups(**_: Any) -> None:
    """Create the role groups and (re)attach their permissions; idempotent (post_migrate)."""
    from django.contrib.auth.models import Group, Permission

    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role.value)
        perms = Permission.objects.filter(content_type__app_label="core", codename__in=codenames)
        group.permissions.set(perms)


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        valid = ", ".join(r.value for r in Role)
        raise ValueError(f"Unknown role {value!r}; choose one of: {valid}.") from None


def user_roles(user: Any) -> frozenset[Role]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached = getattr(user, "_raftweb_roles", None)
    if cached is None:
        names = () if user.is_superuser else user.groups.values_list("name", flat=True)
        cached = roles_of(is_superuser=user.is_superuser, group_names=names)
        user._raftweb_roles = cached
    return cached


def user_roles_set(user: Any, roles: frozenset[Role]) -> None:
    """Record a user's roles read along with the user (see raftweb.core.services.token_lookup),
    so :func:`user_roles` needs no query."""
    user._raftweb_roles = roles


def roles_of(*, is_superuser: bool, group_names: Iterable[str]) -> frozenset[Role]:
    """The roles of an active user with these groups (for callers that read the rows
    themselves, see chat.selectors.conversation_usable)."""
    if is_superuser:
        return frozenset(Role)
    names = set(group_names)
    return frozenset(r for r in Role if r.value in names)


def user_has_role(user: Any, *roles: Role | str) -> bool:
    """True when the user holds any of ``roles`` (admins and superusers hold every role's rights
    only where the caller lists ADMIN; superusers always pass)."""
    return roles_allow(user_roles(user), getattr(user, "is_superuser", False), *roles)


def roles_allow(held: frozenset[Role], is_superuser: bool, *roles: Role | str) -> bool:
    """The rule behind :func:`user_has_role`, for roles already read."""
    if not held:
        return False
    if is_superuser:
        return True
    return any(Role(r) in held for r in roles)


def role_required(*roles: Role) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """View decorator: anonymous users are sent to login (by the middleware), users without
    one of ``roles`` get the 403 page."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            if not request.user.is_authenticated:
                from django.contrib.auth.views import redirect_to_login

                return redirect_to_login(request.get_full_path())
            if not user_has_role(request.user, *roles):
                raise PermissionDenied("Your role does not give access to this page.")
            return view(request, *args, **kwargs)

        wrapper.raftweb_roles = roles  # type: ignore[attr-defined]
        return wrapper

    return decorator
