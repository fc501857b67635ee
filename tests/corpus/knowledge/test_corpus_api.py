"""The knowledge-base API: CRUD, multipart upload, documents, search, and who may do what."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.services import document_upload, kb_create
from corpus.models import Document, KnowledgeBase

pytestmark = pytest.mark.django_db

BATTERY = (
    b"Battery\n\nCharge the battery with the USB-C cable; fast charging needs the 25 W adapter."
)


def _bearer(api_token_for: Callable[[Any], str], user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_for(user)}"}


@pytest.fixture
def kb() -> KnowledgeBase:
    kb = kb_create(name="Manual", slug="manual")
    result = document_upload(kb=kb, name="battery.txt", chunks=[BATTERY], enqueue=False)
    document_ingest(document_id=result.document.pk)
    return kb


def test_it_creates_updates_and_deletes_a_kb(
    alice: Any, api_token_for: Callable[[Any], str]
) -> None:
    c, auth = Client(), _bearer(api_token_for, alice)
    r = c.post(
        "/api/kbs",
        {"name": "Support", "description": "help", "chunk_size": 200, "chunk_overlap": 20},
        content_type="application/json",
        **auth,
    )
    assert r.status_code == 201, r.content
    assert r.json()["slug"] == "support" and r.json()["chunk_size"] == 200
    r = c.patch(
        "/api/kbs/support", {"name": "Support desk"}, content_type="application/json", **auth
    )
    assert r.status_code == 200 and KnowledgeBase.objects.get(slug="support").name == "Support desk"
    r = c.post(
        "/api/kbs", {"name": "Dup", "slug": "support"}, content_type="application/json", **auth
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = c.post(
        "/api/kbs", {"name": "Bad", "chunk_size": 2}, content_type="application/json", **auth
    )
    assert r.status_code == 422 and "chunk size" in r.json()["error"]["message"]
    for bad in ({"name": ""}, {"name": "   "}):  # the README: invalid values are 422
        r = c.post("/api/kbs", bad, content_type="application/json", **auth)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid", r.content
    r = c.patch("/api/kbs/support", {"name": ""}, content_type="application/json", **auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
    assert c.delete("/api/kbs/support", **auth).status_code == 204
    assert not KnowledgeBase.objects.filter(slug="support").exists()


def test_it_uploads_several_files_and_ingests_them(
    alice: Any,
    api_token_for: Callable[[Any], str],
    kb: KnowledgeBase,
    django_capture_on_commit_callbacks: Any,
) -> None:
    c, auth = Client(), _bearer(api_token_for, alice)
    files = [
        SimpleUploadedFile("gps.txt", b"Location\n\nTurn on GPS in quick settings."),
        SimpleUploadedFile("../../battery-copy.txt", BATTERY),
        SimpleUploadedFile("empty.txt", b""),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post("/api/kbs/manual/documents", {"files": files}, **auth)
    assert r.status_code == 201, r.content
    body = r.json()
    assert [d["name"] for d in body["documents"]] == ["gps.txt"]
    assert body["duplicates"] == [kb.documents.get(name="battery.txt").pk]
    assert body["failed"] == [
        {"name": "empty.txt", "error": "empty.txt: the file is empty", "code": "empty"}
    ]
    doc = Document.objects.get(name="gps.txt")
    assert doc.status == Document.Status.READY  # the (immediate) worker ran the ingest
    r = c.get(f"/api/kbs/manual/documents/{doc.pk}", **auth)
    assert r.status_code == 200 and r.json()["chunk_count"] == 1
    assert len(c.get("/api/kbs/manual/documents", **auth).json()) == 2
    assert c.delete(f"/api/kbs/manual/documents/{doc.pk}", **auth).status_code == 204
    assert c.get(f"/api/kbs/manual/documents/{doc.pk}", **auth).status_code == 404


def test_it_rejects_an_oversized_upload_while_streaming(
    alice: Any, api_token_for: Callable[[Any], str], kb: KnowledgeBase, settings: Any
) -> None:
    settings.MAX_UPLOAD_BYTES = 1000
    c = Client()
    r = c.post(
        "/api/kbs/manual/documents",
        {"files": [SimpleUploadedFile("big.txt", b"z" * 5000)]},
        **_bearer(api_token_for, alice),
    )
    assert r.status_code == 413
    assert "larger than the upload limit" in r.json()["error"]["details"]["failed"][0]["error"]
    assert not Document.objects.filter(name="big.txt").exists()


def test_it_searches_and_returns_hits(
    sam: Any, api_token_for: Callable[[Any], str], kb: KnowledgeBase
) -> None:
    c, auth = Client(), _bearer(api_token_for, sam)
    r = c.post(
        "/api/kbs/manual/search",
        {"query": "fast charging adapter", "mode": "hybrid", "k": 3},
        content_type="application/json",
        **auth,
    )
    assert r.status_code == 200, r.content
    hit = r.json()[0]
    assert (
        hit["document_name"] == "battery.txt"
        and "25 W" in hit["text"]
        and hit["end"] > hit["start"]
    )
    r = c.get("/api/kbs/manual/search", {"q": "battery", "mode": "bm25"}, **auth)
    assert r.status_code == 200 and r.json()[0]["document_name"] == "battery.txt"
    r = c.post(
        "/api/kbs/manual/search",
        {"query": "x", "mode": "nope"},
        content_type="application/json",
        **auth,
    )
    assert r.status_code == 400


@pytest.mark.parametrize(
    (
        "user_fixture",
        "list_status",
        "create_status",
        "upload_status",
        "search_status",
        "delete_status",
    ),
    [
        ("alice", 200, 201, 201, 200, 204),
        ("rita", 200, 403, 403, 200, 403),
        ("sam", 200, 403, 403, 200, 403),
        ("mallory", 403, 403, 403, 403, 403),
    ],
)
def test_it_enforces_roles(
    request: pytest.FixtureRequest,
    api_token_for: Callable[[Any], str],
    kb: KnowledgeBase,
    user_fixture: str,
    list_status: int,
    create_status: int,
    upload_status: int,
    search_status: int,
    delete_status: int,
) -> None:
    user = request.getfixturevalue(user_fixture)
    c, auth = Client(), _bearer(api_token_for, user)
    assert c.get("/api/kbs", **auth).status_code == list_status
    assert (
        c.post("/api/kbs", {"name": "X"}, content_type="application/json", **auth).status_code
        == create_status
    )
    files = {"files": [SimpleUploadedFile("n.txt", b"Some new text about the camera.")]}
    assert c.post("/api/kbs/manual/documents", files, **auth).status_code == upload_status
    r = c.post(
        "/api/kbs/manual/search", {"query": "battery"}, content_type="application/json", **auth
    )
    assert r.status_code == search_status
    assert c.get("/api/kbs/manual/documents", **auth).status_code == (
        200 if user_fixture == "alice" else 403
    )
    assert c.delete("/api/kbs/manual", **auth).status_code == delete_status


def test_it_requires_authentication(kb: KnowledgeBase) -> None:
    c = Client()
    assert c.get("/api/kbs").status_code == 401
    r = c.post("/api/kbs/manual/search", {"query": "battery"}, content_type="application/json")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_it_hides_group_restricted_kbs(
    sam: Any, rita: Any, api_token_for: Callable[[Any], str], kb: KnowledgeBase
) -> None:
    tier2 = Group.objects.create(name="tier2")
    kb.allowed_groups.add(tier2)
    sam.groups.add(tier2)
    sam_auth, rita_auth = _bearer(api_token_for, sam), _bearer(api_token_for, rita)
    c = Client()
    assert [k["slug"] for k in c.get("/api/kbs", **sam_auth).json()] == ["manual"]
    assert c.get("/api/kbs", **rita_auth).json() == []
    r = c.post(
        "/api/kbs/manual/search", {"query": "battery"}, content_type="application/json", **rita_auth
    )
    assert r.status_code == 404
    r = c.post(
        "/api/kbs/manual/search", {"query": "battery"}, content_type="application/json", **sam_auth
    )
    assert r.status_code == 200


def test_it_works_with_the_browser_session_and_csrf(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase
) -> None:
    c = client_for(alice)
    r = c.get("/api/kbs/manual")
    assert r.status_code == 200 and r.json()["documents"] == 1


def test_it_documents_the_multipart_upload_in_openapi(
    alice: Any, client_for: Callable[[Any], Client]
) -> None:
    schema = client_for(alice).get("/api/openapi.json").json()
    body = schema["paths"]["/api/kbs/{slug}/documents"]["post"]["requestBody"]
    assert "files" in body["content"]["multipart/form-data"]["schema"]["properties"]
