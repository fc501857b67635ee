from __future__ import annotations

from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from ninja import Router, Schema

from raftweb.api_auth import require_role, session_auth, token_auth
from raftweb.core import services
from raftweb.core.health import cached_health_report, public_report, redacted_report
from raftweb.core.roles import Role, user_has_role, user_roles
from raftweb.errors import Invalid, NotFound

router = Router(tags=["core"])


class MeOut(Schema):
    username: str
    roles: list[str]


class TokenOut(Schema):
    id: int
    name: str
    hint: str
    read_only: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ProfileOut(Schema):
    role: str
    backend: str
    model: str
    base_url: str
    adapter_path: str
    max_concurrency: int
    timeout_s: float
    price_in_per_1k: float
    price_out_per_1k: float
    has_api_key: bool


class ProfileIn(Schema):
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    adapter_path: str | None = None
    max_concurrency: int | None = None
    timeout_s: float | None = None
    price_in_per_1k: float | None = None
    price_out_per_1k: float | None = None


def _anyone(request: HttpRequest) -> str:
    """Last resort of the health endpoint's auth: anonymous callers are let in (and get the
    short report)."""
    return "anonymous"


def _health_view_of(user: Any) -> str:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return "public"
    return "full" if user_has_role(user, Role.ADMIN) else "redacted"


@router.get(
    "/health",
    auth=[token_auth, session_auth, _anyone],
    summary="Up or down per part; details (database, worker, vector store, model backends) "
    "need a login",
)
async def health(request: HttpRequest) -> JsonResponse:
    report = await cached_health_report()
    view = await sync_to_async(_health_view_of)(request.user)
    if view == "public":
        body = public_report(report)
    elif view == "redacted":
        body = redacted_report(report)
    else:
        body = report
    return JsonResponse(body, status=200 if report["status"] == "ok" else 503)


@router.get("/me", response=MeOut)
def me(request: HttpRequest) -> MeOut:
    return MeOut(
        username=request.user.get_username(),
        roles=sorted(r.value for r in user_roles(request.user)),
    )


@router.get("/tokens", response=list[TokenOut])
def token_list(request: HttpRequest) -> list[TokenOut]:
    return list(request.user.api_tokens.all())


@router.delete("/tokens/{token_id}", response=TokenOut)
def token_revoke(request: HttpRequest, token_id: int) -> TokenOut:
    try:
        return services.token_revoke(user=request.user, token_id=token_id)
    except services.ServiceError as exc:
        raise NotFound(str(exc)) from None


def _profile_out(profile: object) -> ProfileOut:
    return ProfileOut(
        role=profile.role,
        backend=profile.backend,
        model=profile.model,
        base_url=profile.base_url,
        adapter_path=profile.adapter_path,
        max_concurrency=profile.max_concurrency,
        timeout_s=profile.timeout_s,
        price_in_per_1k=float(profile.price_in_per_1k),
        price_out_per_1k=float(profile.price_out_per_1k),
        has_api_key=bool(profile.api_key),
    )


@router.get("/model-profiles", response=list[ProfileOut])
def profile_list(request: HttpRequest) -> list[ProfileOut]:
    require_role(request, Role.ADMIN)
    return [_profile_out(p) for p in services.profiles_ensure()]


@router.put("/model-profiles/{role}", response=ProfileOut)
def profile_update(request: HttpRequest, role: str, payload: ProfileIn) -> ProfileOut:
    require_role(request, Role.ADMIN)
    fields = payload.dict(exclude_none=True)
    try:
        profile = services.profile_update(role=role, user=request.user, **fields)
    except services.ServiceError as exc:
        raise Invalid(str(exc)) from None
    return _profile_out(profile)
