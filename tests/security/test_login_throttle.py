"""Brute-force protection of the login page and of API tokens (raftweb/core/throttle.py).

Real HTTP through the Django test client; each request names its client address
(``REMOTE_ADDR``), so "another address" really is one. Limits are the defaults (5 wrong
passwords per account, 20 per address, 20 bad tokens per address) unless a test shortens the
lockout to watch it end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from tests.services import port_open, require_service

ATTACKER = "203.0.113.66"
ELSEWHERE = "198.51.100.20"
THIRD = "192.0.2.30"


def login(username: str, password: str, address: str, client: Client | None = None) -> Any:
    client = client or Client()
    response = client.post(
        "/login/", {"username": username, "password": password}, REMOTE_ADDR=address
    )
    response.logged_in = "_auth_user_id" in client.session  # type: ignore[attr-defined]
    return response


def assert_locked(response: Any) -> None:
    assert response.status_code == 429, response.status_code
    assert int(response["Retry-After"]) > 0
    assert not response.logged_in
    assert "Too many failed attempts" in response.content.decode()


def test_it_locks_an_account_after_repeated_wrong_passwords_even_for_the_right_one(
    sam, rita
) -> None:
    statuses = [login("sam", f"guess-{i}", ATTACKER).status_code for i in range(50)]
    # The first four are plain "didn't match" answers; from the fifth on, locked out.
    assert statuses[:4] == [200] * 4 and set(statuses[4:]) == {429}, statuses
    # The right password does not help, from any address.
    assert_locked(login("sam", "pw-sam", ELSEWHERE))
    # Other accounts are not affected elsewhere.
    assert login("rita", "pw-rita", ELSEWHERE).logged_in


def test_it_locks_an_address_that_tries_many_accounts(sam, rita) -> None:
    # A password spray: one guess each for many accounts, from one address.
    statuses = [login(f"user{i}", "Summer2024!", ATTACKER).status_code for i in range(20)]
    assert statuses[:19] == [200] * 19 and statuses[19] == 429, statuses
    # That address is locked even for a right password of an account it never tried...
    assert_locked(login("sam", "pw-sam", ATTACKER))
    # ...while the accounts themselves work from elsewhere.
    assert login("sam", "pw-sam", ELSEWHERE).logged_in
    assert login("rita", "pw-rita", THIRD).logged_in


def test_it_ends_the_lockout_after_a_while_and_doubles_a_repeat(sam, rita) -> None:
    with override_settings(AUTH_LOCKOUT_S=1):
        for i in range(5):
            last = login("sam", f"guess-{i}", ATTACKER)
        assert_locked(last)
        assert last["Retry-After"] == "1"
        assert_locked(login("sam", "pw-sam", ELSEWHERE))
        time.sleep(1.2)
        assert login("sam", "pw-sam", ELSEWHERE).logged_in
        # A second lockout of the same account lasts twice as long.
        for i in range(5):
            last = login("sam", f"again-{i}", ATTACKER)
        assert_locked(last)
        assert last["Retry-After"] == "2"


def test_it_forgets_an_accounts_typos_after_a_successful_login(sam) -> None:
    for _ in range(4):
        assert login("sam", "typo", ELSEWHERE).status_code == 200
    assert login("sam", "pw-sam", ELSEWHERE).logged_in
    for _ in range(4):
        assert login("sam", "typo", ELSEWHERE).status_code == 200
    assert login("sam", "pw-sam", ELSEWHERE).logged_in


def test_it_ignores_a_forged_x_forwarded_for_unless_proxies_are_trusted(sam) -> None:
    client = Client()
    for i in range(20):
        client.post(
            "/login/",
            {"username": f"user{i}", "password": "x"},
            REMOTE_ADDR=ATTACKER,
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",  # a new "address" every time: not believed
        )
    assert_locked(login("sam", "pw-sam", ATTACKER))
    # Behind one trusted proxy, the address that proxy saw is the client's.
    with override_settings(TRUSTED_PROXIES=1):
        proxied = Client()
        response = proxied.post(
            "/login/",
            {"username": "sam", "password": "pw-sam"},
            REMOTE_ADDR=ATTACKER,  # the proxy
            HTTP_X_FORWARDED_FOR=f"6.6.6.6, {ELSEWHERE}",  # forged entry, then the real client
        )
        assert response.status_code == 302 and "_auth_user_id" in proxied.session


# --------------------------------------------------------------------------- API tokens


def api_get(token: str, address: str) -> Any:
    return Client().get(
        "/api/me", headers={"Authorization": f"Bearer {token}"}, REMOTE_ADDR=address
    )


def test_it_answers_429_with_retry_after_to_an_address_guessing_tokens(
    sam, rita, api_token_for
) -> None:
    statuses = [api_get(f"rw_guess{i}", ATTACKER).status_code for i in range(30)]
    assert statuses[:19] == [401] * 19 and set(statuses[19:]) == {429}, statuses
    locked = api_get(api_token_for(sam), ATTACKER)  # a valid token, from the guessing address
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0
    error = locked.json()["error"]
    assert error["code"] == "rate_limited" and "invalid API tokens" in error["message"]
    assert error["details"]["retry_after"] == int(locked["Retry-After"])
    # Everyone else's scripts carry on.
    assert api_get(api_token_for(rita), ELSEWHERE).status_code == 200
    assert api_get(api_token_for(sam), THIRD).status_code == 200


def test_it_lets_a_token_lockout_expire(sam, api_token_for) -> None:
    with override_settings(AUTH_LOCKOUT_S=1, TOKEN_FAILURE_LIMIT=3):
        assert [api_get("rw_bad", ATTACKER).status_code for _ in range(3)] == [401, 401, 429]
        assert api_get(api_token_for(sam), ATTACKER).status_code == 429
        time.sleep(1.2)
        assert api_get(api_token_for(sam), ATTACKER).status_code == 200


@pytest.mark.parametrize("limit_setting", ["LOGIN_FAILURE_LIMIT", "TOKEN_FAILURE_LIMIT"])
def test_it_can_be_switched_off(sam, limit_setting: str) -> None:
    with override_settings(**{limit_setting: 0, "LOGIN_ADDRESS_FAILURE_LIMIT": 0}):
        for i in range(30):
            login("sam", f"guess-{i}", ATTACKER)
            api_get(f"rw_guess{i}", ATTACKER)
        if limit_setting == "LOGIN_FAILURE_LIMIT":
            assert login("sam", "pw-sam", ATTACKER).logged_in
        else:
            assert api_get("rw_guess", ATTACKER).status_code == 401


# --------------------------------------------------------------------- several web processes

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]
IN_A_PROCESS = """
import sys, django
django.setup()
from django.test import RequestFactory
from raftweb.core import throttle
request = RequestFactory().post("/login/", REMOTE_ADDR="203.0.113.66")
counters = throttle.login_counters(request, "sam")
if sys.argv[1] == "fail":
    print(max(throttle.failure_record("login", counters) for _ in range(5)))
else:
    print(throttle.locked_for("login", counters))
"""


def test_it_shares_lockouts_between_web_processes_through_redis(tmp_path: Path) -> None:
    local = "127.0.0.1" in REDIS_URL or "localhost" in REDIS_URL
    require_service("Redis", port_open("127.0.0.1", 6379) if local else True, REDIS_URL)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "raftweb.settings",
        "RAFTWEB_IGNORE_DOTENV": "1",
        "RAFTWEB_DATA_DIR": str(tmp_path),
        "REDIS_URL": REDIS_URL,
        "RAFTWEB_HUEY_NAME": f"raftweb-test-{uuid.uuid4().hex[:8]}",  # the cache's key prefix
    }

    def run(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", IN_A_PROCESS, mode],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    try:
        assert run("check") == 0
        assert run("fail") == 900  # one process locks the account...
        assert 890 < run("check") <= 900  # ...and another process sees the lock
    finally:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{env['RAFTWEB_HUEY_NAME']}:*"))
        if keys:
            client.delete(*keys)
