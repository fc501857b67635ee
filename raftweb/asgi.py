"""ASGI entry point: HTTP through Django (static files served in-process, so a local
install needs no web server in front), WebSockets through Channels."""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "raftweb.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from raftweb.core.warmup import mark_web_process, start_embedding_warmup  # noqa: E402

# The web process (this module is its entry point) encodes queries in a child process
# (RAFTWEB_EMBED_PROCESS=auto) and loads the embedding model in the background now, not on the
# first search (RAFTWEB_EMBEDDING_WARMUP).
mark_web_process()
start_embedding_warmup()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from raftweb.core.admission import AdmissionLimit  # noqa: E402


class StaticFiles(ASGIStaticFilesHandler):
    """Django's static file handler, plus the headers SecurityMiddleware would add (static
    responses never pass through the middleware): browsers must not sniff a script out of
    a file served as something else."""

    def serve(self, request: Any) -> Any:
        response = super().serve(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


def _websocket_urlpatterns() -> list:
    patterns: list = []
    for module_name in ("chat.routing",):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        patterns.extend(module.websocket_urlpatterns)
    return patterns


application = ProtocolTypeRouter(
    {
        # At most HTTP_CONCURRENCY requests computed at once: the rest wait without a thread.
        "http": AdmissionLimit(StaticFiles(django_asgi_app), settings.HTTP_CONCURRENCY),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(_websocket_urlpatterns()))
        ),
    }
)
