"""schemathesis against the API's own OpenAPI schema: every operation, requests generated from
the schema (valid and not), sent to the real Django app (WSGI) as the admin with a token. No
request may end in a 5xx.

Bounded: a few examples per operation, no example database, the whole module well under a
minute. The chat operation talks to a scripted model server on loopback, so a 5xx there would
be the app's fault, not a missing model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings

from raftweb.api import api
from raftweb.testing.scripted_llm import ScriptedLLM
from tests.security.conftest import World

pytestmark = pytest.mark.django_db

schema = schemathesis.openapi.from_dict(api.get_openapi_schema())
APP = get_wsgi_application()


@pytest.fixture(scope="module")
def student_server() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(token_delay_s=0.0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def app_in_test_transaction(world: World, student_server: ScriptedLLM) -> Iterator[Any]:
    """The WSGI app, as Django's test client runs it: without closing the test's database
    connection at each request start (that would end the test's transaction)."""
    from raftweb.core.services import profile_update

    profile_update(
        role="student",
        user=None,
        backend="openai",
        model=student_server.model,
        base_url=student_server.base_url,
        timeout_s=10.0,
    )
    request_started.disconnect(close_old_connections)
    try:
        yield APP
    finally:
        request_started.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=3,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(
    case: Any, app_in_test_transaction: Any, world: World
) -> None:
    headers = {"Authorization": f"Bearer {world.raw_tokens['alice']}"}
    # Random ids only ever meet a 404; the world's real ones take the generated bodies and
    # queries deep into the services.
    real = {
        "slug": world.tv.slug,
        "document_id": world.doc.pk,
        "pair_id": world.pair.pk,
        "job_id": world.job.pk,
        "version": "base",
    }
    for name in set(case.path_parameters or {}) & set(real):
        case.path_parameters[name] = real[name]
    response = case.call(app=app_in_test_transaction, headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:500]}\n"
        f"{case.as_curl_command(headers=headers)}"
    )
