"""The web process's Django handler: a synchronous middleware chain behind one thread hop
(raftweb.asgi.OneHopASGIHandler), with async views and streamed responses still served."""

from __future__ import annotations

import asyncio
from inspect import iscoroutinefunction
from typing import Any

import pytest


def test_the_middleware_chain_is_built_synchronously() -> None:
    from raftweb.asgi import OneHopASGIHandler, django_asgi_app

    assert isinstance(django_asgi_app, OneHopASGIHandler)
    # Django's own ASGIHandler builds an async chain (two thread hops per middleware).
    assert not iscoroutinefunction(django_asgi_app._middleware_chain)


@pytest.mark.django_db(transaction=True)
def test_sync_and_async_views_answer_through_the_asgi_application(alice: Any) -> None:
    import httpx

    from raftweb.asgi import application
    from raftweb.core.services import token_create

    _, token = token_create(user=alice, name="asgi")
    headers = {"Authorization": f"Bearer {token}", "Host": "127.0.0.1"}

    async def main() -> tuple[Any, Any, Any]:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            health = await http.get("/api/health", headers=headers)  # an async view
            kbs = await http.get("/api/kbs", headers=headers)  # a sync view
            login = await http.get("/login/")  # a page, through every middleware
            return health, kbs, login

    health, kbs, login = asyncio.run(main())
    assert health.status_code in (200, 503) and "models" in health.json()
    assert kbs.status_code == 200 and isinstance(kbs.json(), list)
    assert login.status_code == 200 and "csrfmiddlewaretoken" in login.text
    assert "Content-Security-Policy" in login.headers and "X-Frame-Options" in login.headers
