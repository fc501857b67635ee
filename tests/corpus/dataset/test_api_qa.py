from __future__ import annotations

import json

from django.core.files.uploadedfile import SimpleUploadedFile

from corpus.models import QAPair


def _auth(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_it_launches_and_reads_generation_jobs(
    client,
    alice,
    rita,
    api_token_for,
    manual_kb,
    scripted_profiles,
    django_capture_on_commit_callbacks,
) -> None:  # type: ignore[no-untyped-def]
    scripted_profiles()
    admin = _auth(api_token_for(alice))
    body = {"config": {"limit_chunks": 2, "questions_per_chunk": 1, "hard_negative_share": 0}}
    denied = client.post(
        "/api/kbs/manual/generation-jobs",
        body,
        content_type="application/json",
        **_auth(api_token_for(rita)),
    )
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    bad = client.post(
        "/api/kbs/manual/generation-jobs",
        {"config": {"p": 3}},
        content_type="application/json",
        **admin,
    )
    assert bad.status_code == 400 and "p must be between" in bad.json()["error"]["message"]
    unknown = client.post(
        "/api/kbs/manual/generation-jobs",
        {"config": {"nope": 1}},
        content_type="application/json",
        **admin,
    )
    assert unknown.status_code == 400
    assert "unknown generation setting(s): nope" in unknown.json()["error"]["message"]
    # The typed schema documents every knob with the config's own bounds.
    from raftweb.api import api

    spec = api.get_openapi_schema()["components"]["schemas"]
    assert spec["GenerationConfigIn"]["properties"]["p"]["maximum"] == 1.0
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post(
            "/api/kbs/manual/generation-jobs", body, content_type="application/json", **admin
        )
    assert resp.status_code == 201
    job_id = resp.json()["id"]
    job = client.get(f"/api/generation-jobs/{job_id}", **admin).json()
    assert job["status"] == "finished" and job["rows"] == 2 and job["tokens_in"] > 0
    assert [j["id"] for j in client.get("/api/kbs/manual/generation-jobs", **admin).json()] == [
        job_id
    ]
    conflict = client.post(f"/api/generation-jobs/{job_id}/cancel", **admin)
    assert conflict.status_code == 409
    assert client.get("/api/generation-jobs/99999", **admin).status_code == 404
    assert client.get("/api/kbs/nope/generation-jobs", **admin).status_code == 404


def test_it_reviews_pairs_with_optimistic_locking(
    client, rita, sam, api_token_for, make_pair
) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    make_pair(judge_score=2)
    hdr = _auth(api_token_for(rita))
    assert client.get("/api/kbs/manual/qa-pairs", **_auth(api_token_for(sam))).status_code == 403
    page = client.get("/api/kbs/manual/qa-pairs", {"min_score": 4}, **hdr).json()
    assert page["count"] == 1 and page["items"][0]["id"] == pair.pk
    ok = client.patch(
        f"/api/qa-pairs/{pair.pk}",
        {"version": 1, "action": "approve"},
        content_type="application/json",
        **hdr,
    )
    assert ok.status_code == 200 and ok.json()["status"] == "approved" and ok.json()["version"] == 2
    stale = client.patch(
        f"/api/qa-pairs/{pair.pk}",
        {"version": 1, "action": "edit", "question": "Overwrite?"},
        content_type="application/json",
        **hdr,
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
    assert QAPair.objects.get(pk=pair.pk).question == "How do I turn the phone off?"
    bulk = client.post(
        "/api/kbs/manual/qa-pairs/bulk",
        {"action": "reject", "filters": {"max_score": 2}},
        content_type="application/json",
        **hdr,
    )
    assert bulk.json() == {"changed": 1}
    agreement = client.get("/api/kbs/manual/qa-agreement", **hdr).json()
    assert agreement["n"] == 2 and agreement["confusion"] == [[1, 0], [0, 1]]


def test_it_imports_and_exports_over_the_api(client, alice, api_token_for, manual_kb) -> None:  # type: ignore[no-untyped-def]
    hdr = _auth(api_token_for(alice))
    empty = client.get("/api/kbs/manual/qa-pairs/export", {"format": "hf"}, **hdr)
    assert empty.status_code == 404 and empty.json()["error"]["code"] == "empty"
    data = (
        json.dumps(
            {"question": "How do I restart?", "answer": "Tap Restart.", "gold": ["power.txt"]}
        )
        + "\n{bad\n"
    ).encode()
    resp = client.post(
        "/api/kbs/manual/qa-pairs/import",
        {"file": SimpleUploadedFile("qa.jsonl", data), "status": "approved", "split": "train"},
        **hdr,
    )
    assert resp.status_code == 200
    assert resp.json()["imported"] == 1 and resp.json()["skipped"][0]["line"] == 2
    out = client.get("/api/kbs/manual/qa-pairs/export", {"format": "completion"}, **hdr)
    assert out.status_code == 200
    rows = [json.loads(line) for line in b"".join(out.streaming_content).decode().splitlines()]
    assert len(rows) == 1 and set(rows[0]) == {"prompt", "completion"}


def test_it_reads_and_overrides_kb_prompts(
    client, client_for, alice, api_token_for, manual_kb, scripted_profiles
) -> None:  # type: ignore[no-untyped-def]
    from corpus.generation.runner import generation_job_run
    from corpus.generation.services import generation_job_create

    hdr = _auth(api_token_for(alice))
    got = client.get("/api/kbs/manual/qa-prompts", **hdr).json()
    assert "questions_system" in got["defaults"] and got["overrides"] == {}
    bad = client.put(
        "/api/kbs/manual/qa-prompts",
        {"overrides": {"nope": "x"}},
        content_type="application/json",
        **hdr,
    )
    assert bad.status_code == 400
    custom = "You are a synthetic question-answer pair generator. Write {n} questions, JSON array, about phones."
    ok = client.put(
        "/api/kbs/manual/qa-prompts",
        {"overrides": {"questions_system": custom}},
        content_type="application/json",
        **hdr,
    )
    assert ok.status_code == 200 and ok.json()["overrides"] == {"questions_system": custom}
    teacher, _ = scripted_profiles()
    generation_job_run(
        job_id=generation_job_create(
            kb=manual_kb,
            enqueue=False,
            config={"limit_chunks": 1, "questions_per_chunk": 2, "hard_negative_share": 0},
        ).pk
    )
    questions_calls = [msgs for kind, msgs in teacher.calls if kind == "questions"]
    assert questions_calls and questions_calls[0][0].content == custom.replace("{n}", "2")
    page = client_for(alice).get("/generation/kb/manual/prompts/")
    assert page.status_code == 200 and "about phones" in page.content.decode()
    saved = client_for(alice).post("/generation/kb/manual/prompts/", {"questions_system": ""})
    assert saved.status_code == 302
    assert client.get("/api/kbs/manual/qa-prompts", **hdr).json()["overrides"] == {}
