from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

# The API answers 401 in its own error shape; static files and health need no login.
OPEN_PREFIXES = ("/api/", "/static/")
OPEN_PATHS = {"/health"}


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Anonymous users are sent to login everywhere except the API, static files and health."""

    def process_view(
        self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any
    ) -> Any:
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


def csp_header(policy: dict[str, list[str]]) -> str:
    return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Sends ``Content-Security-Policy`` built from ``settings.SECURE_CSP`` (the shape of Django
    6.0's setting, so that on 6.0 this becomes django.middleware.csp's job). A response that
    already carries the header keeps it. (The web process builds its middleware chain
    synchronously: see raftweb.asgi.OneHopASGIHandler.)"""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        policy = settings.SECURE_CSP
        if policy:
            response.headers.setdefault("Content-Security-Policy", csp_header(policy))
        return response
