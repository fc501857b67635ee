"""Browser security headers: Content-Security-Policy on every page (and no inline code that it
would block), nosniff on static files, HTTPS settings that pass ``check --deploy``.

Every page of the permission matrix (tests/security/test_permission_matrix.py: its URL list
and world) is fetched as an admin, or, where an admin may not see it (other people's
conversations), as a user who may — the full page and its htmx fragment.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from tests.security.conftest import World
from tests.security.test_permission_matrix import (  # noqa: F401 - *_world: autouse
    PAGES,
    USERS,
    evaluation_world,
    training_world,
    url_for,
)

# The module shares one world (conftest.module_world), as the permission matrix does.
pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]

# Script types that are data, not code (json_script, Swagger's settings): CSP ignores them.
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json"}


class InlineCode(HTMLParser):
    """Collects whatever a ``script-src 'self'; style-src 'self'`` policy would block."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            src = values.get("src") or ""
            kind = (values.get("type") or "").lower()
            if not src and kind not in DATA_SCRIPT_TYPES:
                self.found.append("<script> without src")
            if src and not src.startswith("/static/"):
                self.found.append(f"<script src={src!r}> from elsewhere")
        if tag == "style":
            self.found.append("<style> element")
        if tag == "link" and "stylesheet" in (values.get("rel") or ""):
            if not (values.get("href") or "").startswith("/static/"):
                self.found.append(f"style sheet from elsewhere: {values.get('href')!r}")
        for name, value in attrs:
            if name == "style":
                self.found.append(f"<{tag} style={value!r}>")
            elif name.startswith("on"):
                self.found.append(f"<{tag} {name}={value!r}>")
            elif name in ("href", "src", "action") and (value or "").lower().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}={value!r}>")

    handle_startendtag = handle_starttag


def inline_code(html: str) -> list[str]:
    scanner = InlineCode()
    scanner.feed(html)
    scanner.close()
    return scanner.found


def assert_csp(response: Any, where: str) -> None:
    policy = response.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
    assert directives.get("script-src") == ["'self'"], f"{where}: {policy!r}"
    assert directives.get("style-src") == ["'self'"], f"{where}: {policy!r}"
    assert directives.get("default-src") == ["'self'"], f"{where}: {policy!r}"
    assert directives.get("frame-ancestors") == ["'none'"], f"{where}: {policy!r}"
    assert {"'self'", "wss:"} <= set(directives.get("connect-src", [])), f"{where}: {policy!r}"
    assert "base-uri" in directives and "form-action" in directives, f"{where}: {policy!r}"


def viewer(name: str) -> str:
    """An admin, unless the page is not theirs to see (someone else's conversation)."""
    page = PAGES[name]
    if page.expected_get("alice") not in (403, 404):
        return "alice"
    return next(u for u in USERS if page.expected_get(u) not in (403, 404))


@pytest.mark.parametrize("name", sorted(PAGES))
def test_it_sends_a_csp_and_no_inline_code_on_every_page(name: str, world: World) -> None:
    user = viewer(name)
    client = Client()
    client.force_login(world.users[user])
    url = url_for(name, world)
    for headers in ({}, {"HX-Request": "true"}):
        response = client.get(url, headers=headers)
        where = f"GET {url} as {user} {headers}"
        assert response.status_code == PAGES[name].expected_get(user), where
        assert_csp(response, where)
        if response.get("Content-Type", "").startswith("text/html"):
            found = inline_code(response.content.decode())
            assert not found, f"{where}: inline code a CSP blocks: {found}"


def test_it_sends_the_csp_on_the_login_page_api_errors_and_the_api_docs(world: World) -> None:
    anonymous = Client()
    login = anonymous.get("/login/")
    assert_csp(login, "login")
    assert not inline_code(login.content.decode())
    assert_csp(anonymous.get("/api/me"), "API 401")
    admin = Client()
    admin.force_login(world.users["alice"])
    docs = admin.get("/api/docs")
    assert docs.status_code == 200
    assert_csp(docs, "API docs")
    body = docs.content.decode()
    # Swagger UI comes from our own static files (ninja in INSTALLED_APPS), not from a CDN.
    assert "cdn." not in body and "https://" not in body, body[:500]
    assert not inline_code(body), inline_code(body)


def template_files() -> list[Path]:
    return sorted(
        p
        for p in ROOT.glob("**/templates/**/*.html")
        if ".venv" not in p.parts and "site-packages" not in p.parts
    )


def test_it_has_no_inline_code_in_any_template() -> None:
    """The pages above show most templates; this catches the branches they do not reach
    (progress bars of running jobs, error states)."""
    problems = {}
    for path in template_files():
        source = re.sub(r"\{#.*?#\}", "", path.read_text())
        source = re.sub(r"\{%\s*static\s+['\"]([^'\"]+)['\"]\s*%\}", r"/static/\1", source)
        found = inline_code(source)
        if found:
            problems[str(path.relative_to(ROOT))] = found
    assert not problems, problems
    assert len(template_files()) > 20


# --------------------------------------------------------------------------- HTTPS settings


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTWEB_")}
    env.pop("REDIS_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="raftweb.settings",
        RAFTWEB_IGNORE_DOTENV="1",
        RAFTWEB_DATA_DIR=str(tmp_path),
        RAFTWEB_DEBUG="false",
        RAFTWEB_SECRET_KEY=secrets.token_urlsafe(60),
        RAFTWEB_ALLOWED_HOSTS="raft.example.com",
        RAFTWEB_SECURE_COOKIES="true",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def test_it_passes_the_deploy_check_with_production_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout + result.stderr


PROBE = """
import django
django.setup()
from django.test import Client
c = Client(HTTP_HOST="raft.example.com")
plain = c.get("/login/")
print("plain", plain.status_code, plain.get("Location", ""))
print("health", c.get("/health").status_code)
tls = c.get("/login/", secure=True)
print("tls", tls.status_code, tls.get("Strict-Transport-Security", ""))
proxied = c.get("/login/", HTTP_X_FORWARDED_PROTO="https")
print("proxied", proxied.status_code, proxied.get("Strict-Transport-Security", ""))
"""


def probe(tmp_path: Path, **extra: str) -> dict[str, list[str]]:
    env = production_env(tmp_path, RAFTWEB_ALLOWED_HOSTS="raft.example.com", **extra)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}


def test_it_redirects_to_https_and_sends_hsts_when_secure_cookies_are_on(tmp_path: Path) -> None:
    got = probe(tmp_path)
    assert got["plain"] == ["301", "https://raft.example.com/login/"]
    assert got["health"] == ["200"], "load balancers probe /health over plain HTTP"
    assert got["tls"][0] == "200"
    assert got["tls"][1:] == ["max-age=31536000;", "includeSubDomains"]
    # No proxy header is trusted unless configured: a client cannot claim HTTPS.
    assert got["proxied"][0] == "301"


def test_it_trusts_a_tls_terminating_proxy_only_when_told(tmp_path: Path) -> None:
    got = probe(tmp_path, RAFTWEB_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert got["proxied"][0] == "200" and got["proxied"][1] == "max-age=31536000;"
    got = probe(tmp_path, RAFTWEB_SSL_REDIRECT="false", RAFTWEB_HSTS_SECONDS="0")
    assert got["plain"] == ["200"] and got["tls"] == ["200"]


def test_it_keeps_the_local_default_on_plain_http() -> None:
    assert settings.SECURE_SSL_REDIRECT is False and settings.SECURE_HSTS_SECONDS == 0
