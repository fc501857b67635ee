from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from raftweb import settings as s

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("helper", "value", "message"),
    [
        (lambda: s.env_int("X_RW", 1), "ten", "X_RW='ten' is not a whole number"),
        (lambda: s.env_int("X_RW", 1, minimum=1), "0", "X_RW=0 must be at least 1"),
        (lambda: s.env_bool("X_RW"), "maybe", "X_RW='maybe' is not a boolean"),
        (lambda: s.env_float("X_RW", 1.0), "1,5", "X_RW='1,5' is not a number"),
        (
            lambda: s.env_url("X_RW", ("redis",)),
            "localhost:6379",
            "must start with one of: redis://",
        ),
    ],
)
def test_it_rejects_malformed_values_naming_the_variable(
    monkeypatch, helper, value, message
) -> None:
    monkeypatch.setenv("X_RW", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        helper()


def test_it_parses_good_values(monkeypatch) -> None:
    monkeypatch.setenv("X_RW", " 42 ")
    assert s.env_int("X_RW", 1) == 42
    monkeypatch.setenv("X_RW", "Yes")
    assert s.env_bool("X_RW") is True
    monkeypatch.setenv("X_RW", "a, b,,c")
    assert s.env_list("X_RW", []) == ["a", "b", "c"]


def test_it_stops_start_up_on_a_bad_env_value(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RAFTWEB_DATA_DIR": str(tmp_path),
        "RAFTWEB_MAX_UPLOAD_MB": "lots",
        "DJANGO_SETTINGS_MODULE": "raftweb.settings",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "RAFTWEB_MAX_UPLOAD_MB='lots' is not a whole number" in result.stderr


def test_it_switches_to_the_production_stack_from_urls(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RAFTWEB_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "raftweb.settings",
        "DATABASE_URL": "postgresql://u@db.example:5432/rw",
        "REDIS_URL": "redis://cache:6379/1",
        "CHROMA_URL": "http://chroma:8000",
    }
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.HUEY['huey_class'], "
        "s.CHANNEL_LAYERS['default']['BACKEND'], s.CHROMA_URL, s.CACHES['default']['BACKEND'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup();" + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "django.db.backends.postgresql",
        "huey.RedisHuey",
        "channels_redis.core.RedisChannelLayer",
        "http://chroma:8000",
        "django.core.cache.backends.redis.RedisCache",  # login lockouts, rate limits, health
    ]


def test_the_embedded_database_keeps_its_connection_between_calls(tmp_path: Path) -> None:
    """Channels and the search pool call close_old_connections around every call; on the
    embedded SQLite default that used to close (and the next query re-open) the connection
    for every chat turn."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"RAFTWEB_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "raftweb.settings"}
    code = (
        "import django; django.setup();"
        "from django.db import close_old_connections, connection as c;"
        "c.ensure_connection(); first = c.connection; close_old_connections();"
        "c.ensure_connection(); print(c.vendor, c.connection is first)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["sqlite", "True"]
