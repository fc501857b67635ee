"""API authentication: a per-user bearer token for scripts, the session for the browser."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from raftweb.core import throttle
from raftweb.core.roles import Role, user_has_role
from raftweb.errors import Forbidden, RateLimited

# What a read-only token may do: read, never change or launch anything.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        from raftweb.core.services import token_lookup

        # Guessing tokens: after too many bad ones from an address, every token from it is
        # refused for a while (429 + Retry-After), the right one included.
        counters = throttle.token_counters(request)
        wait = throttle.locked_for("token", counters)
        if not wait:
            found = token_lookup(token)
            if found is not None:
                if found.read_only and request.method not in READ_METHODS:
                    raise Forbidden(
                        "This API token is read-only: it may only read (GET). "
                        "Create a token without the read-only option to change things."
                    )
                # Downstream code reads request.user whichever way the caller authenticated.
                request.user = found.user
                return found.user
            wait = throttle.failure_record("token", counters)
            if not wait:
                return None
        raise RateLimited(
            "Too many requests with invalid API tokens from your address; "
            f"try again in {throttle.wait_text(wait)}.",
            retry_after=wait,
        )


class ActiveSessionAuth(SessionAuth):
    def __call__(self, request: HttpRequest) -> Any:
        # A caller that sent a bearer token meant token auth: a bad token is a 401, not a
        # "CSRF check failed" 403 from falling through to the session check.
        if request.META.get("HTTP_AUTHORIZATION", "").lower().startswith("bearer "):
            return None
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        return user if user is not None and user.is_active else None


token_auth = TokenAuth()
session_auth = ActiveSessionAuth()
API_AUTH = [token_auth, session_auth]


def require_role(request: HttpRequest, *roles: Role | str) -> None:
    if not user_has_role(request.user, *roles):
        raise Forbidden("Your role does not allow this.")
