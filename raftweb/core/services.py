"""Core services: users and roles, API tokens, model profiles, worker heartbeat."""

from __future__ import annotations

import os
import secrets
import socket
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from raftweb.core.audit import audit
from raftweb.core.models import ApiToken, ModelProfile, WorkerHeartbeat
from raftweb.core.prepared import PreparedQuery
from raftweb.core.roles import Role, ensure_role_groups, parse_role, roles_of, user_roles_set
from raftweb.errors import RaftwebError
from raftweb.llm import ModelSpec
from raftweb.llm.catalog import ROLES, default_specs_from_env

User = get_user_model()


class ServiceError(RaftwebError):
    """A user-facing failure of a service call (the message is safe to show)."""


# --- users ----------------------------------------------------------------------------


def user_create(
    *, username: str, role: str, password: str | None = None, email: str = ""
) -> tuple[AbstractBaseUser, str]:
    """Create a user in one role. Returns the user and the password (generated if not given)."""
    parsed = parse_role(role)  # ValueError with the valid roles listed
    username = username.strip()
    if not username:
        raise ServiceError("A username is required.")
    password = password or secrets.token_urlsafe(12)
    ensure_role_groups()
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, email=email, password=password)
            user.groups.add(Group.objects.get(name=parsed.value))
            if parsed is Role.ADMIN:
                user.is_staff = True
                user.save(update_fields=["is_staff"])
    except IntegrityError:
        raise ServiceError(f"A user named {username!r} already exists.") from None
    audit(None, "user.create", user, role=parsed.value)
    return user, password


def user_role_set(
    *, user: AbstractBaseUser, role: str, actor: AbstractBaseUser | None = None
) -> AbstractBaseUser:
    """Give ``user`` exactly one role (the other role groups are removed; other groups, such as
    the ones a knowledge base is restricted to, are kept)."""
    parsed = parse_role(role)
    ensure_role_groups()
    before = sorted(
        user.groups.filter(name__in=[r.value for r in Role]).values_list("name", flat=True)
    )
    with transaction.atomic():
        user.groups.remove(*Group.objects.filter(name__in=[r.value for r in Role]))
        user.groups.add(Group.objects.get(name=parsed.value))
        user.is_staff = parsed is Role.ADMIN or user.is_superuser
        user.save(update_fields=["is_staff"])
        audit(actor, "user.role", user, before=before, after=parsed.value)
    user._raftweb_roles = None  # the cached roles (raftweb/core/roles.py) are stale now
    return user


def admin_bootstrap() -> tuple[str, str] | None:
    """On first run, create the 'admin' account; return (username, password) when created."""
    if (
        User.objects.filter(groups__name=Role.ADMIN.value).exists()
        or User.objects.filter(is_superuser=True).exists()
    ):
        return None
    username = os.environ.get("RAFTWEB_ADMIN_USERNAME", "admin")
    password = os.environ.get("RAFTWEB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    user, _ = user_create(username=username, role=Role.ADMIN.value, password=password)
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    return username, password


# --- API tokens -----------------------------------------------------------------------


def token_create(
    *, user: AbstractBaseUser, name: str, read_only: bool = False
) -> tuple[ApiToken, str]:
    name = name.strip()[:100] or "token"
    raw = ApiToken.new_raw()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        token_hash=ApiToken.hash(raw),
        hint=raw[: len(ApiToken.PREFIX) + 6],
        read_only=read_only,
    )
    audit(user, "token.create", token, read_only=read_only)
    return token, raw


def token_revoke(*, user: AbstractBaseUser, token_id: int) -> ApiToken:
    token = ApiToken.objects.filter(user=user, pk=token_id).first()
    if token is None:
        raise ServiceError("No such token.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit(user, "token.revoke", token)
    return token


def token_authenticate(raw: str) -> AbstractBaseUser | None:
    token = token_lookup(raw)
    return token.user if token is not None else None


_TOKEN_FIELDS = [f.attname for f in ApiToken._meta.concrete_fields]
_USER_FIELDS = [f.attname for f in User._meta.concrete_fields]
# An active token by hash, with every column of the token and its user and one row per group
# of the user (a NULL group when none): one query per API request, compiled once.
_TOKEN_QUERY = PreparedQuery(
    lambda digest: (
        ApiToken.objects.active()
        .filter(token_hash=digest)
        .values_list(*_TOKEN_FIELDS, *(f"user__{f}" for f in _USER_FIELDS), "user__groups__name")
    )
)


def token_lookup(raw: str) -> ApiToken | None:
    """The active token with this raw value, its user and the user's roles loaded, or None.

    Read on every request, never memoised: a revoked token, a deactivated user or a changed
    role applies to the next request in every process."""
    if not raw or not raw.startswith(ApiToken.PREFIX):
        return None
    rows = _TOKEN_QUERY.rows(ApiToken.hash(raw))
    if not rows:
        return None
    first, n = rows[0], len(_TOKEN_FIELDS)
    token = ApiToken.from_db("default", _TOKEN_FIELDS, first[:n])
    user = User.from_db("default", _USER_FIELDS, first[n : n + len(_USER_FIELDS)])
    groups = [row[-1] for row in rows if row[-1] is not None]
    user_roles_set(user, roles_of(is_superuser=user.is_superuser, group_names=groups))
    token.user = user
    now = timezone.now()
    # Only write when stale: a script hammering the API should not turn reads into writes.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


# --- model profiles ---------------------------------------------------------------------


def profiles_ensure() -> list[ModelProfile]:
    """Create missing profiles from the environment (existing ones are never overwritten:
    after first run the database, edited in the UI, is the source of truth)."""
    specs = default_specs_from_env(os.environ)
    for role in ROLES:
        spec = specs[role]
        ModelProfile.objects.get_or_create(
            role=role,
            defaults={
                "backend": spec.backend,
                "model": spec.model,
                "base_url": spec.base_url,
                "api_key": spec.api_key,
                "adapter_path": spec.adapter_path,
            },
        )
    # Pipeline order (teacher, judge, student, embedding) reads better than alphabetical.
    return sorted(ModelProfile.objects.all(), key=lambda p: ROLES.index(p.role))


def profile_get(role: str) -> ModelProfile:
    if role not in ROLES:
        raise ServiceError(f"Unknown model role {role!r}; choose one of: {', '.join(ROLES)}.")
    profile = ModelProfile.objects.filter(role=role).first()
    if profile is None:
        profiles_ensure()
        profile = ModelProfile.objects.get(role=role)
    return profile


def profile_to_spec(profile: ModelProfile) -> ModelSpec:
    return ModelSpec(
        backend=profile.backend,
        model=profile.model,
        base_url=profile.base_url,
        api_key=profile.api_key,
        adapter_path=profile.adapter_path,
        timeout_s=profile.timeout_s,
        max_concurrency=profile.max_concurrency,
        setting=f"model profile '{profile.role}' (Settings → Models, or RAFTWEB_{profile.role.upper()}_MODEL)",
    )


def profile_spec(role: str) -> ModelSpec:
    return profile_to_spec(profile_get(role))


async def aprofile_spec(role: str) -> ModelSpec:
    from asgiref.sync import sync_to_async

    return await sync_to_async(profile_spec)(role)


def profile_prices(role: str) -> tuple[float, float]:
    profile = profile_get(role)
    return float(profile.price_in_per_1k), float(profile.price_out_per_1k)


def profile_update(*, role: str, user: AbstractBaseUser | None, **fields: object) -> ModelProfile:
    from raftweb.llm import available_backends

    profile = profile_get(role)
    backend = str(fields.get("backend", profile.backend))
    # The embedding role is not a chat model: it is loaded by sentence-transformers.
    valid = ["sentence-transformers"] if role == "embedding" else list(available_backends())
    if backend not in valid:
        raise ServiceError(
            f"Unknown backend {backend!r} for {role}; choose one of: {', '.join(valid)}."
        )
    if backend == "openai" and not str(fields.get("base_url", profile.base_url)).strip():
        raise ServiceError("The 'openai' backend needs a base URL (e.g. http://127.0.0.1:8001/v1).")
    changed = []
    for key, value in fields.items():
        if key in {"price_in_per_1k", "price_out_per_1k"}:
            value = Decimal(str(value))
        if getattr(profile, key) != value:
            changed.append(key)
        setattr(profile, key, value)
    profile.updated_by = user
    profile.save()
    # Which fields changed, never their values: the API key is a secret.
    audit(user, "profile.update", profile, fields=changed)
    return profile


# --- worker heartbeat -----------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_record(name: str | None = None) -> None:
    name = name or worker_name()
    now = timezone.now()
    if WorkerHeartbeat.objects.filter(name=name).update(beat_at=now):
        return
    try:
        WorkerHeartbeat.objects.create(name=name, beat_at=now)
    except IntegrityError:  # another thread of the same worker won the insert
        WorkerHeartbeat.objects.filter(name=name).update(beat_at=now)
