from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.test import Client

from raftweb.testing.scripted_llm import ScriptedLLM

pytest_plugins = [
    "tests.fixtures.tiny_model",
    "tests.fixtures.serve",
    "tests.fixtures.browser",
    "tests.fixtures.raft",
]


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Every test starts with an empty cache: login-failure counters, rate limits and cached
    health reports must not leak from one test into the next (all share one process)."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    cache = caches["default"]
    if isinstance(cache, LocMemCache):
        cache.clear()
    else:  # Redis: only the test run's own keys (tests/settings.py), never FLUSHDB
        client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
        keys = list(client.scan_iter(match=f"{cache.key_prefix}:*"))
        if keys:
            client.delete(*keys)
    # The per-process chat set-up memo is keyed by KB id, and ids come round again after a
    # test's rollback: a KB must not inherit an earlier test's model server.
    from chat.services import chat_setup_clear

    chat_setup_clear()
    yield


def _make_user(username: str, role: str | None) -> object:
    from django.contrib.auth import get_user_model

    from raftweb.core.services import user_create

    if role is None:
        return get_user_model().objects.create_user(username=username, password="pw-" + username)
    user, _ = user_create(username=username, role=role, password="pw-" + username)
    return user


@pytest.fixture
def alice(db: object) -> object:
    """An admin."""
    return _make_user("alice", "admin")


@pytest.fixture
def rita(db: object) -> object:
    """A reviewer."""
    return _make_user("rita", "reviewer")


@pytest.fixture
def sam(db: object) -> object:
    """A support agent."""
    return _make_user("sam", "support")


@pytest.fixture
def mallory(db: object) -> object:
    """A logged-in user with no role."""
    return _make_user("mallory", None)


@pytest.fixture
def client_for(db: object) -> Callable[[object], Client]:
    def make(user: object) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def api_token_for(db: object) -> Callable[[object], str]:
    from raftweb.core.services import token_create

    def make(user: object) -> str:
        _, raw = token_create(user=user, name="test")
        return raw

    return make


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A real OpenAI-compatible server on loopback streaming scripted RAFT answers."""
    server = ScriptedLLM(token_delay_s=0.002).start()
    try:
        yield server
    finally:
        server.stop()
