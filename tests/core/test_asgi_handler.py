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


@pytest.mark.django_db(transaction=True)
def test_requests_reuse_warm_threads_and_their_database_connections(alice: Any) -> None:
    """Django's handler made a thread per request, so every request also opened a database
    connection (CONN_MAX_AGE never applied); the pooled handler keeps both warm."""
    import httpx
    from django.db.backends.signals import connection_created

    from raftweb.asgi import application, django_asgi_app
    from raftweb.core.services import token_create

    _, token = token_create(user=alice, name="asgi")
    headers = {"Authorization": f"Bearer {token}", "Host": "127.0.0.1"}
    opened: list[object] = []

    def count(sender: object, connection: object, **kwargs: object) -> None:
        opened.append(connection)

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            await http.get("/api/kbs", headers=headers)  # warms a thread and its connection
            made = django_asgi_app.threads.made
            connection_created.connect(count)
            try:
                codes = [
                    (await http.get("/api/kbs", headers=headers)).status_code for _ in range(5)
                ]
            finally:
                connection_created.disconnect(count)
            assert django_asgi_app.threads.made == made  # no new thread for 5 requests in turn
            return codes

    assert asyncio.run(main()) == [200] * 5
    assert opened == []  # ... and no new database connection


def test_the_pool_lends_a_thread_per_lease_and_keeps_a_bounded_number_idle() -> None:
    import threading

    from raftweb.core.request_threads import RequestThreads

    pool = RequestThreads(keep=1)
    first, second = pool.lease(), pool.lease()
    assert pool.made == 0  # a lease takes a thread only when it first runs something
    a = first.submit(threading.get_ident).result()
    b = second.submit(threading.get_ident).result()
    assert a != b and first.submit(threading.get_ident).result() == a  # one thread per lease
    first.release()
    second.release()
    assert pool.made == 2 and pool.idle() == 1  # the second one past `keep` was shut down
    third = pool.lease()
    assert third.submit(threading.get_ident).result() in (a, b)  # a warm thread, not a new one
    assert pool.made == 2
    third.release()
