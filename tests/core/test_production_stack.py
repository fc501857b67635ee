"""The production stack for real: PostgreSQL, Redis for Huey and for the channel layer.

These skip with a reason on a machine without the service, and fail under
RAFTWEB_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import uuid

import pytest
from django.db import connection

from tests.services import port_open, require_service

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    return (
        port_open("127.0.0.1", 6379)
        if "127.0.0.1" in REDIS_URL or "localhost" in REDIS_URL
        else True
    )


def test_it_runs_on_postgresql_when_configured(db) -> None:
    require_service(
        "PostgreSQL",
        connection.vendor == "postgresql",
        "the suite runs on SQLite here; set DATABASE_URL=postgresql://… (CI does)",
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        assert "PostgreSQL" in cursor.fetchone()[0]


async def test_it_round_trips_a_message_through_the_redis_channel_layer() -> None:
    require_service("Redis", _redis_up(), f"nothing listens for {REDIS_URL}")
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[REDIS_URL])

    channel = await layer.new_channel()
    await layer.send(channel, {"type": "chat.token", "text": "héllo"})
    message = await layer.receive(channel)
    await layer.flush()
    assert message == {"type": "chat.token", "text": "héllo"}


def test_it_queues_and_runs_a_huey_task_on_redis() -> None:
    require_service("Redis", _redis_up(), f"nothing listens for {REDIS_URL}")
    from huey import RedisHuey

    huey = RedisHuey(f"raftweb-test-{uuid.uuid4().hex[:8]}", url=REDIS_URL)

    @huey.task()
    def add(a: int, b: int) -> int:
        return a + b

    try:
        result = add(2, 3)
        assert huey.pending_count() == 1
        task = huey.dequeue()
        huey.execute(task)
        assert result.get() == 5
    finally:
        huey.storage.flush_all()


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set: the embedded stack is in use"
)
def test_it_uses_redis_for_jobs_and_channels_when_redis_url_is_set(settings) -> None:
    assert settings.HUEY["huey_class"] == "huey.RedisHuey"
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    # Login lockouts, rate limits and health reports are shared by every web process.
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
