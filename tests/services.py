"""Tests that need a real service (PostgreSQL, Redis, a Chroma server, a browser…) skip with
a reason where it is missing, except under RAFTWEB_REQUIRE_SERVICES=1 (CI), where a missing
service is a failure: CI must exercise the production stack, not silently skip it."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

REQUIRE = os.environ.get("RAFTWEB_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes"}


def require_service(name: str, available: bool, reason: str) -> None:
    if available:
        return
    message = f"{name} unavailable: {reason}"
    if REQUIRE:
        pytest.fail(f"{message} (RAFTWEB_REQUIRE_SERVICES=1 makes this a failure)", pytrace=False)
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    for candidate in (os.environ.get("RAFTWEB_CHROMIUM", ""), *CHROMIUM_CANDIDATES):
        if candidate and shutil.which(candidate):
            return candidate
    return None


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
