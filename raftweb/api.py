"""The single NinjaAPI at /api/ (OpenAPI docs at /api/docs). Each app contributes a Router
with full paths; every error leaves as ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

from raftweb.api_auth import API_AUTH
from raftweb.core.text import CleanJSONParser
from raftweb.errors import Internal, Invalid, NotFound, RaftwebError, RateLimited, Unauthorized

log = logging.getLogger(__name__)

api = NinjaAPI(
    title="RAFTweb API",
    version="1",
    description="Knowledge bases, RAFT datasets, review and chat. Authenticate with "
    "`Authorization: Bearer <token>` (create tokens under Account → API tokens).",
    auth=API_AUTH,
    urls_namespace="api",
    # The docs are a page like any other: log in first (the middleware leaves /api/ alone).
    docs_decorator=login_required,
    parser=CleanJSONParser(),  # lone surrogates in JSON become U+FFFD (raftweb/core/text.py)
)


def _error(request: HttpRequest, err: RaftwebError) -> HttpResponse:
    response = api.create_response(request, err.as_body(), status=err.status)
    for name, value in err.headers.items():
        response[name] = value
    return response


@api.exception_handler(RaftwebError)
def on_raftweb_error(request: HttpRequest, exc: RaftwebError) -> HttpResponse:
    """Every user-facing error of every service and endpoint, in the one JSON shape."""
    return _error(request, exc)


@api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(
        request,
        Unauthorized("Authentication required: log in or send a valid API token."),
    )


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return _error(
        request, Invalid("The request is not valid.", status=422, details={"errors": exc.errors})
    )


@api.exception_handler(Throttled)
def on_throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    # A rate limit of raftweb/core/throttle.py (ninja adds Retry-After after this handler).
    return _error(
        request, RateLimited("Too many requests: slow down and retry later.", retry_after=exc.wait)
    )


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, RaftwebError(str(exc), code="http_error", status=exc.status_code))


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, NotFound("Not found."))


@api.exception_handler(Exception)
def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("unhandled API error on %s", request.path)
    return _error(request, Internal("Internal error; it has been logged."))


# Routers are mounted after the handlers above; the order keeps the docs grouped.
from chat.api import router as chat_router  # noqa: E402
from corpus.dataset.api import router as dataset_router  # noqa: E402
from corpus.generation.api import router as generation_router  # noqa: E402
from corpus.knowledge.api import router as knowledge_router  # noqa: E402
from evaluation.api import router as evaluation_router  # noqa: E402
from raftweb.core.api import router as core_router  # noqa: E402
from training.api import router as training_router  # noqa: E402

for router in (
    core_router,
    knowledge_router,
    generation_router,
    dataset_router,
    training_router,
    evaluation_router,
    chat_router,
):
    api.add_router("/", router)
