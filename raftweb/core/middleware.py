from __future__ import annotations

from typing import Any

from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.http import HttpRequest

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
