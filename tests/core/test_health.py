from __future__ import annotations

import json

import pytest


@pytest.fixture
def client(alice, client_for):
    """The details need a login; an admin sees them all (server addresses included)."""
    return client_for(alice)


def test_it_reports_every_component(db, client) -> None:
    response = client.get("/api/health")
    body = response.json()
    assert set(body) == {"status", "database", "worker", "vector_store", "models"}
    assert body["database"]["ok"] is True
    assert set(body["models"]) == {"teacher", "judge", "student", "embedding"}
    # The embedding model ships in a pip package: available offline.
    assert body["models"]["embedding"]["ok"] is True
    assert response.status_code == (200 if body["status"] == "ok" else 503)


def test_it_says_how_to_fix_an_unavailable_hub_model(db, client) -> None:
    teacher = client.get("/api/health").json()["models"]["teacher"]
    assert teacher["ok"] is False
    assert "Qwen/Qwen2.5-0.5B-Instruct" in teacher["detail"]
    assert "local path" in teacher["detail"] and "openai" in teacher["detail"]


def test_it_reports_an_unreachable_model_server_plainly(alice, api_token_for, client) -> None:
    from tests.services import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    client.put(
        "/api/model-profiles/judge",
        data=json.dumps({"backend": "openai", "model": "m", "base_url": url}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_token_for(alice)}"},
    )
    judge = client.get("/api/health").json()["models"]["judge"]
    assert judge["ok"] is False
    assert "127.0.0.1" in judge["detail"]


def test_it_reports_a_local_model_as_available(db, client, tiny_model_dir) -> None:
    from raftweb.core.services import profile_update

    profile_update(role="student", user=None, backend="hf", model=str(tiny_model_dir))
    student = client.get("/api/health").json()["models"]["student"]
    assert student["ok"] is True, student
