"""Start the app the way `make run` does (embedded defaults, temp data dir, free port),
wait for /api/health, log in over HTTP, then stop it with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CHROMA_URL"}
    }
    env.update(
        RAFTWEB_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="raftweb.settings",
        RAFTWEB_HUEY_IMMEDIATE="0",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _wait_health(base: str, proc: subprocess.Popen[str], timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early with {proc.returncode}")
        try:
            response = httpx.get(f"{base}/api/health", timeout=10)
            last = response.json()
            if last["database"]["ok"] and last["worker"]["ok"]:
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"health never became ready: {last}")


@pytest.mark.slow
def test_it_serves_logs_in_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=_embedded_env(tmp_path / "data"),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        health = _wait_health(base, proc)
        # Anonymous callers learn up or down per part, nothing about where or what.
        assert "detail" not in health["database"] and health["models"]["teacher"] == {"ok": False}

        output = log_path.read_text()
        match = re.search(r"username: (\S+)\s+password: (\S+)", output)
        assert match, output
        username, password = match.groups()

        with httpx.Client(base_url=base, follow_redirects=False, timeout=20) as client:
            login_page = client.get("/login/")
            csrf = client.cookies["csrftoken"]
            assert login_page.status_code == 200
            response = client.post(
                "/login/",
                data={"username": username, "password": password, "csrfmiddlewaretoken": csrf},
                headers={"Referer": f"{base}/login/"},
            )
            assert response.status_code == 302, response.text[:500]
            home = client.get("/")
            assert home.status_code == 200
            assert "Knowledge bases" in home.text or "Models" in home.text
            static = client.get("/static/vendor/htmx.min.js")
            assert static.status_code == 200
            assert static.headers["x-content-type-options"] == "nosniff"
            assert "script-src 'self'" in home.headers["content-security-policy"]
            # Logged in (as the admin), the health report has the details.
            health = client.get("/api/health").json()
            assert health["database"]["detail"].startswith("sqlite")
            assert "embedded Chroma" in health["vector_store"]["detail"]
            # The default teacher is a hub model and no hub is reachable: said plainly, with
            # the fix.
            teacher = health["models"]["teacher"]
            assert teacher["ok"] is False and "local path" in teacher["detail"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text()[-2000:]
    assert "RAFTweb stopped." in log_path.read_text()
    # Nothing left listening.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/api/health", timeout=2)


def test_it_prints_the_admin_password_only_on_first_run(tmp_path: Path) -> None:
    env = _embedded_env(tmp_path / "data")
    code = "from raftweb.core.management.commands.serve import Command; c=Command(); c._announce_admin()"
    setup = "import django; django.setup(); from django.core.management import call_command; call_command('migrate', verbosity=0);"
    first = subprocess.run(
        [sys.executable, "-c", setup + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    second = subprocess.run(
        [sys.executable, "-c", setup + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "password:" in first.stdout, first.stderr
    assert "password:" not in second.stdout and "Admin account exists" in second.stdout
