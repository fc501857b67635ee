from __future__ import annotations

import json

from raftweb.core.models import ModelProfile
from raftweb.core.services import profile_spec


def test_it_seeds_profiles_from_the_environment(db, monkeypatch) -> None:
    monkeypatch.setenv("RAFTWEB_JUDGE_BACKEND", "openai")
    monkeypatch.setenv("RAFTWEB_JUDGE_MODEL", "judge-8b")
    monkeypatch.setenv("RAFTWEB_JUDGE_BASE_URL", "http://127.0.0.1:9999/v1")
    spec = profile_spec("judge")
    assert (spec.backend, spec.model, spec.base_url) == (
        "openai",
        "judge-8b",
        "http://127.0.0.1:9999/v1",
    )
    assert profile_spec("teacher").model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert profile_spec("embedding").model == "all-MiniLM-L6-v2"


def test_it_lets_an_admin_edit_a_profile_without_restart(alice, client_for) -> None:
    client = client_for(alice)
    response = client.post(
        "/settings/models/student/",
        {
            "backend": "openai",
            "model": "tuned",
            "base_url": "http://127.0.0.1:8001/v1",
            "api_key": "sk-1",
            "adapter_path": "",
            "max_concurrency": 4,
            "timeout_s": 30,
            "price_in_per_1k": "0.001",
            "price_out_per_1k": "0.002",
        },
    )
    assert response.status_code == 302
    spec = profile_spec("student")
    assert (spec.backend, spec.model, spec.api_key, spec.max_concurrency) == (
        "openai",
        "tuned",
        "sk-1",
        4,
    )
    page = client.get("/settings/models/").content.decode()
    assert "sk-1" not in page  # keys are write-only


def test_it_refuses_an_openai_profile_without_base_url(alice, client_for) -> None:
    before = profile_spec("teacher")
    response = client_for(alice).post(
        "/settings/models/teacher/",
        {
            "backend": "openai",
            "model": "x",
            "base_url": "",
            "max_concurrency": 4,
            "timeout_s": 30,
            "price_in_per_1k": "0",
            "price_out_per_1k": "0",
        },
    )
    assert response.status_code == 200
    assert "needs a base URL" in response.content.decode()
    assert profile_spec("teacher") == before


def test_it_refuses_an_unknown_backend_over_the_api(alice, api_token_for, client) -> None:
    response = client.put(
        "/api/model-profiles/teacher",
        data=json.dumps({"backend": "magic"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_token_for(alice)}"},
    )
    assert response.status_code == 400
    assert "Unknown backend 'magic'" in response.json()["error"]["message"]
    assert ModelProfile.objects.get(role="teacher").backend == "hf"


def test_it_keeps_profile_pages_from_non_admins(sam, rita, client_for) -> None:
    for user in (sam, rita):
        assert (
            client_for(user).post("/settings/models/teacher/", {"backend": "openai"}).status_code
            == 403
        )
    assert ModelProfile.objects.filter(role="teacher", backend="openai").count() == 0
