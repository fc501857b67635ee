"""ASGI entry point: HTTP through Django (static files served in-process, so a local
install needs no web server in front), WebSockets through Channels."""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "raftweb.settings")

import django  # noqa: E402
from asgiref.sync import ThreadSensitiveContext, sync_to_async  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from raftweb.core.request_threads import RequestThreads  # noqa: E402


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with the middleware chain built synchronously, as under WSGI: a
    request goes from the event loop to its thread once, not twice per middleware.

    Why: in Django's async chain every ``MiddlewareMixin`` middleware runs ``process_request``
    and ``process_response`` through ``sync_to_async``: ~20 thread hops per request with our
    11, each a GIL hand-off that waits behind every busy thread under load. bench/load.py, 200
    concurrent API searches on 2 cores: 32 -> 49 requests/s. Async views (the OpenAI-compatible
    chat endpoint, health) still run on the event loop (Django calls them through
    ``async_to_sync`` from the request's thread), and streamed responses are still sent by it.
    """

    def __init__(self) -> None:
        super().__init__()
        from django.conf import settings

        # Warm request threads (and their database connections) for the requests computed at
        # once (raftweb/core/request_threads.py); a streamed answer keeps its thread while it
        # streams, so keep some more.
        self.threads = RequestThreads(2 * max(settings.HTTP_CONCURRENCY, 8))

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # Django's own error
            return
        # Django's handler opens ThreadSensitiveContext() here: a new thread per request.
        lease = self.threads.lease()
        try:
            async with ThreadSensitiveContext(executor=lease):
                await self.handle(scope, receive, send)
        finally:
            lease.release()

    async def get_response_async(self, request: Any) -> Any:
        # thread_sensitive: the request's own pooled thread (the ThreadSensitiveContext that
        # __call__ opens), as Django's async chain would use for its sync parts.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()

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
