"""Read-only API tokens: every operation that is not a GET is refused (403) and changes nothing;
reads work as with a full token. The list of operations is the permission matrix's, walked from
the API itself, so a new operation is covered without an edit here."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from raftweb.core.models import ApiToken
from raftweb.core.services import token_create
from tests.security import test_permission_matrix as matrix
from tests.security.conftest import World, db_snapshot, snapshot_diff
from tests.security.test_permission_matrix import API_OPS, api_call, api_operations

pytestmark = pytest.mark.django_db

# The matrix's module fixtures (training_world, evaluation_world, …: autouse) build the objects
# its API_OPS paths point at; they must run here too.
globals().update(
    {name: obj for name, obj in vars(matrix).items() if name.endswith("_world") and callable(obj)}
)

WRITES = sorted(k for k in api_operations() if k[0] != "GET")
READS = sorted(k for k in api_operations() if k[0] == "GET")


def _read_only_token(w: World, user: str = "alice") -> str:
    return token_create(user=w.users[user], name="dashboard", read_only=True)[1]


def test_it_covers_writes_of_every_kind() -> None:
    # The generated list really holds the API's writes (a broken walk would pass vacuously).
    methods = {m for m, _ in WRITES}
    assert {"POST", "PUT", "PATCH", "DELETE"} <= methods and len(WRITES) >= 20


@pytest.mark.parametrize("key", WRITES, ids=lambda k: f"{k[0]} {k[1]}")
def test_it_refuses_every_write_with_a_read_only_token(key: tuple[str, str], world: World) -> None:
    method, _ = key
    op = API_OPS[key]
    raw = _read_only_token(world)  # alice: an admin, allowed every one of these otherwise
    before = db_snapshot()
    response = api_call(world, op, method, raw)
    assert response.status_code == 403, f"{key} → {response.status_code}"
    error = response.json()["error"]
    assert error["code"] == "forbidden" and "read-only" in error["message"]
    assert not snapshot_diff(before, db_snapshot()), f"{key}: a read-only token changed data"


@pytest.mark.parametrize("key", READS, ids=lambda k: f"{k[0]} {k[1]}")
def test_it_lets_a_read_only_token_read_as_its_user(key: tuple[str, str], world: World) -> None:
    op = API_OPS[key]
    response = api_call(world, op, "GET", _read_only_token(world))
    expected: Any = (200, 503) if key == ("GET", "/api/health") else (op.expected("alice"),)
    assert response.status_code in expected, f"{key} → {response.status_code}"


def test_it_still_lets_a_full_token_of_the_same_user_write(world: World) -> None:
    full = world.raw_tokens["alice"]
    response = Client().patch(
        "/api/kbs/tv",
        {"name": "Renamed by a full token"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {full}"},
    )
    assert response.status_code == 200
    world.tv.refresh_from_db()
    assert world.tv.name == "Renamed by a full token"


def test_it_creates_a_read_only_token_from_the_tokens_page(world: World) -> None:
    client = Client()
    client.force_login(world.users["sam"])
    response = client.post("/account/tokens/", {"name": "metrics", "read_only": "on"})
    assert response.status_code == 200
    raw = re.search(r'data-testid="new-token">([^<]+)<', response.content.decode()).group(1)
    token = ApiToken.objects.get(token_hash=ApiToken.hash(raw))
    assert token.read_only is True and token.user == world.users["sam"]
    assert "read-only" in client.get("/account/tokens/").content.decode()
    listed = Client().get("/api/tokens", headers={"Authorization": f"Bearer {raw}"}).json()
    assert {t["name"]: t["read_only"] for t in listed}["metrics"] is True
    # A token made without the box is a full one.
    client.post("/account/tokens/", {"name": "writer"})
    assert ApiToken.objects.get(user=world.users["sam"], name="writer").read_only is False
