"""Static files and pages through the real ASGI stack carry nosniff and the CSP.

Its own module: the live server needs a transactional database, which must not be mixed with
the shared, savepoint-wrapped world of the other security tests (on PostgreSQL the flush at
teardown then meets pending deferred-constraint triggers)."""

from __future__ import annotations

import httpx
import pytest

from tests.chat.conftest import live_app  # noqa: F401 - the real ASGI app on a loopback port

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_serves_static_files_with_nosniff_over_real_http(live_app: str) -> None:  # noqa: F811
    for path in ("/static/vendor/htmx.min.js", "/static/css/app.css", "/static/js/app.js"):
        response = httpx.get(f"{live_app}{path}", timeout=10)
        assert response.status_code == 200, path
        assert response.headers["x-content-type-options"] == "nosniff", path
    # The pages themselves, through the same ASGI stack.
    login = httpx.get(f"{live_app}/login/", timeout=10)
    assert login.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in login.headers["content-security-policy"]
