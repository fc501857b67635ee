"""The audit log: admin actions are recorded by the services with who did them (page, API token
or command alike), and the admins' /audit/ page lists them, filtered and paginated, escaped."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from raftweb.core.audit import acting_as, audit
from raftweb.core.models import AuditEvent
from tests.security.conftest import World

pytestmark = pytest.mark.django_db


def _api(w: World, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {w.raw_tokens[user]}"}


def _page(w: World, user: str) -> Client:
    client = Client()
    client.force_login(w.users[user])
    return client


def _events(since: int) -> list[tuple[str, str, str, str]]:
    return list(
        AuditEvent.objects.filter(pk__gt=since)
        .order_by("pk")
        .values_list("action", "actor_name", "target_type", "kb_slug")
    )


def _row_actions(html: str) -> set[str]:
    return set(re.findall(r"<td><code>([^<]+)</code></td>", html))


def _last() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_it_recorded_the_world_being_built_with_its_actor(world: World) -> None:
    # build_world created the KBs through kb_create(user=alice) and ingested documents.
    created = AuditEvent.objects.filter(action="kb.create").values_list("kb_slug", "actor_name")
    assert {("tv", "alice"), ("vault", "alice"), ("junk", "alice")} <= set(created)


def test_it_records_knowledge_base_and_document_actions(world: World) -> None:
    w = world
    start = _last()
    api = Client()
    assert (
        api.post(
            "/api/kbs",
            {"name": "From API"},
            content_type="application/json",
            headers=_api(w, "alice"),
        ).status_code
        == 201
    )
    response = api.delete(f"/api/kbs/junk/documents/{w.junk_doc.pk}", headers=_api(w, "alice"))
    assert response.status_code == 204
    assert _page(w, "alice").post("/kb/junk/delete/").status_code in (302, 200)
    events = _events(start)
    assert events == [
        ("kb.create", "alice", "knowledgebase", "from-api"),
        # The document service takes no user: the actor is the API token's user.
        ("document.delete", "alice", "document", "junk"),
        ("kb.delete", "alice", "knowledgebase", "junk"),
    ]
    deleted = AuditEvent.objects.get(pk__gt=start, action="kb.delete")
    assert deleted.target_label == w.junk.name and deleted.details == {"documents": 0}


def test_it_records_uploads_with_their_uploader(world: World) -> None:
    from corpus.knowledge.services import document_upload

    start = _last()
    result = document_upload(
        kb=world.tv,
        name="new.txt",
        chunks=[b"fresh bytes"],
        user=world.users["alice"],
        enqueue=False,
    )
    event = AuditEvent.objects.get(pk__gt=start)
    assert (event.action, event.actor_name, event.target_id) == (
        "document.upload",
        "alice",
        str(result.document.pk),
    )
    assert event.details["size"] == len(b"fresh bytes")
    # The same bytes again: nothing new stored, nothing recorded.
    document_upload(kb=world.tv, name="again.txt", chunks=[b"fresh bytes"], enqueue=False)
    assert AuditEvent.objects.filter(pk__gt=start).count() == 1


def test_it_records_generation_review_and_dataset_actions(world: World) -> None:
    w = world
    start = _last()
    api = Client()
    assert (
        api.post(f"/api/generation-jobs/{w.job.pk}/cancel", headers=_api(w, "alice")).status_code
        == 200
    )
    bulk = api.post(
        "/api/kbs/tv/qa-pairs/bulk",
        {"action": "approve"},
        content_type="application/json",
        headers=_api(w, "rita"),
    )
    assert bulk.status_code == 200
    assert (
        api.get("/api/kbs/tv/qa-pairs/export?format=hf", headers=_api(w, "alice")).status_code
        == 200
    )
    body = json.dumps({"question": "Imported question?", "answer": "Imported answer."}) + "\n"
    imported = api.post(
        "/api/kbs/tv/qa-pairs/import",
        {"file": SimpleUploadedFile("pairs.jsonl", body.encode()), "status": "pending"},
        headers=_api(w, "alice"),
    )
    assert imported.status_code == 200, imported.content
    events = _events(start)
    assert [e[:2] for e in events] == [
        ("generation.cancel", "alice"),
        ("review.bulk", "rita"),
        ("dataset.export", "alice"),
        ("dataset.import", "alice"),
    ]
    assert all(e[3] == "tv" for e in events)
    bulk_event = AuditEvent.objects.get(pk__gt=start, action="review.bulk")
    assert bulk_event.details == {"bulk_action": "approve", "pairs": bulk.json()["changed"]}


def test_it_records_training_and_model_version_actions(world: World) -> None:
    from training.models import ModelVersion

    w = world
    start = _last()
    api = Client()
    run = api.post(
        "/api/kbs/tv/training-runs",
        {"kind": "generator"},
        content_type="application/json",
        headers=_api(w, "alice"),
    )
    assert run.status_code == 201, run.content
    assert (
        api.post(
            f"/api/training-runs/{run.json()['id']}/cancel", headers=_api(w, "alice")
        ).status_code
        == 200
    )
    version = ModelVersion.objects.create(
        kb=w.tv,
        kind="generator",
        label="audit-adapter",
        path="/nonexistent/adapter",
        is_adapter=True,
        base_model="tiny",
    ).pk
    assert (
        api.post(f"/api/model-versions/{version}/activate", headers=_api(w, "alice")).status_code
        == 200
    )
    assert (
        api.post(f"/api/model-versions/{version}/merge", headers=_api(w, "alice")).status_code
        == 202
    )
    assert [e[:2] for e in _events(start)] == [
        ("training.start", "alice"),
        ("training.cancel", "alice"),
        ("model_version.activate", "alice"),
        ("model_version.merge", "alice"),
    ]


def test_it_records_profile_token_and_role_changes_without_secrets(world: World) -> None:
    from raftweb.core.models import ApiToken
    from raftweb.core.services import user_role_set

    w = world
    start = _last()
    secret = "sk-audit-secret-9f8e7d6c5b4a"
    page = _page(w, "alice")
    saved = page.post(
        "/settings/models/student/",
        {
            "backend": "openai",
            "model": "changed",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": secret,
            "max_concurrency": 2,
            "timeout_s": 5,
            "price_in_per_1k": 0,
            "price_out_per_1k": 0,
        },
    )
    assert saved.status_code == 302
    sams = _page(w, "sam")
    sams.post("/account/tokens/", {"name": "cron", "read_only": "on"})
    token = ApiToken.objects.get(user=w.users["sam"], name="cron")
    sams.post(f"/account/tokens/{token.pk}/revoke/")
    with acting_as(w.users["alice"]):
        user_role_set(user=w.users["mallory"], role="reviewer")
    events = _events(start)
    assert [e[:2] for e in events] == [
        ("profile.update", "alice"),
        ("token.create", "sam"),
        ("token.revoke", "sam"),
        ("user.role", "alice"),
    ]
    profile_event = AuditEvent.objects.get(pk__gt=start, action="profile.update")
    assert "api_key" in profile_event.details["fields"]
    assert "model" in profile_event.details["fields"]
    every_row = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert secret not in every_row
    role_event = AuditEvent.objects.get(pk__gt=start, action="user.role")
    assert role_event.details == {"before": [], "after": "reviewer"}
    assert role_event.target_label == "mallory"
    w.users["mallory"].refresh_from_db()
    assert list(w.users["mallory"].groups.values_list("name", flat=True)) == ["reviewer"]


def test_it_records_a_role_change_from_the_command_as_system(world: World) -> None:
    import io

    from django.core.management import call_command

    start = _last()
    call_command("set_role", "sam", "reviewer", stdout=io.StringIO())
    event = AuditEvent.objects.get(pk__gt=start)
    assert (event.action, event.actor_name, event.target_label) == ("user.role", "", "sam")
    assert event.details == {"before": ["support"], "after": "reviewer"}
    html = _page(world, "alice").get("/audit/?action=user.role").content.decode()
    assert "system" in html and "reviewer" in html


def test_it_redacts_secret_details_whatever_the_caller_passes(world: World) -> None:
    event = audit(
        world.users["alice"],
        "profile.update",
        ("modelprofile", "x", "x"),
        api_key="sk-1",
        nested={"password": "p"},
    )
    assert event.details == {"api_key": "[redacted]", "nested": {"password": "[redacted]"}}
    with pytest.raises(ValueError, match="unknown audit action"):
        audit(None, "kb.explode", None)


def test_it_shows_the_log_to_admins_only_filtered_and_paginated(world: World) -> None:
    w = world
    alice, rita = w.users["alice"], w.users["rita"]
    for i in range(60):
        audit(alice, "generation.start", ("generationjob", str(i), f"job {i}"), kb="tv")
    audit(rita, "review.bulk", w.tv, bulk_action="reject", pairs=3)
    page = _page(w, "alice")
    html = page.get("/audit/").content.decode()
    assert html.count('data-testid="audit-event"') == 50  # first page
    assert "page 1 of" in html and "review.bulk" in html  # newest first
    second = page.get("/audit/?page=2").content.decode()
    assert 'data-testid="audit-event"' in second
    by_rita = page.get("/audit/?actor=rita&action=review").content.decode()
    assert by_rita.count('data-testid="audit-event"') == 1 and "reject" in by_rita
    everything_by_rita = AuditEvent.objects.filter(actor_name="rita").count()
    listed = page.get("/audit/?actor=rita").content.decode().count('data-testid="audit-event"')
    assert listed == everything_by_rita >= 2
    family = _row_actions(page.get("/audit/?action=kb").content.decode())
    assert "kb.create" in family and family <= {"kb.create", "kb.delete"}
    junk = _row_actions(page.get("/audit/?kb=junk").content.decode())
    assert "kb.create" in junk and "review.bulk" not in junk
    fragment = page.get("/audit/?actor=rita", headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<div id="audit-table">')
    for user in ("rita", "sam", "mallory"):
        assert _page(w, user).get("/audit/").status_code == 403
    assert Client().get("/audit/").status_code == 302  # anonymous: to login


def test_it_escapes_hostile_labels_and_details(world: World) -> None:
    payload = '<script>alert("audit")</script>'
    audit(world.users["alice"], "kb.create", ("knowledgebase", "1", payload), note=payload)
    html = _page(world, "alice").get("/audit/").content.decode()
    assert payload not in html
    assert "&lt;script&gt;alert(&quot;audit&quot;)&lt;/script&gt;" in html
