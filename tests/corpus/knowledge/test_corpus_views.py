"""Knowledge-base pages: permissions, forms, upload (JS and plain), htmx fragments, search."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from corpus.knowledge.highlight import highlight
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.services import document_upload, kb_create
from corpus.models import Document, KnowledgeBase

pytestmark = pytest.mark.django_db

NASTY = b"Battery safety\n\n<script>alert('x')</script> Charge the battery & keep it cool. Charging is fast."


@pytest.fixture
def kb() -> KnowledgeBase:
    kb = kb_create(name="Manual", slug="manual")
    result = document_upload(kb=kb, name="battery.txt", chunks=[NASTY], enqueue=False)
    document_ingest(document_id=result.document.pk)
    return kb


def _pages(kb: KnowledgeBase) -> list[str]:
    doc = kb.documents.get()
    return [
        reverse("corpus:kb_list"),
        reverse("corpus:kb_create"),
        reverse("corpus:kb_detail", args=[kb.slug]),
        reverse("corpus:kb_edit", args=[kb.slug]),
        reverse("corpus:kb_delete", args=[kb.slug]),
        reverse("corpus:kb_search", args=[kb.slug]),
        reverse("corpus:document_detail", args=[kb.slug, doc.pk]),
    ]


@pytest.mark.parametrize(
    ("user_fixture", "status"), [("alice", 200), ("rita", 403), ("sam", 403), ("mallory", 403)]
)
def test_it_shows_pages_to_admins_only(
    request: pytest.FixtureRequest,
    client_for: Callable[[Any], Client],
    kb: KnowledgeBase,
    user_fixture: str,
    status: int,
) -> None:
    c = client_for(request.getfixturevalue(user_fixture))
    for url in _pages(kb):
        assert c.get(url).status_code == status, url
    posts = [
        reverse("corpus:kb_upload", args=[kb.slug]),
        reverse("corpus:kb_reindex", args=[kb.slug]),
    ]
    for url in posts:
        assert c.post(url).status_code in ((302, 200) if status == 200 else (403,)), url


def test_it_sends_anonymous_users_to_login(kb: KnowledgeBase) -> None:
    c = Client()
    for url in _pages(kb) + [reverse("corpus:kb_upload", args=[kb.slug])]:
        r = c.get(url)
        assert r.status_code == 302 and r["Location"].startswith(reverse("login")), url


def test_it_lists_creates_edits_and_deletes(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase
) -> None:
    c = client_for(alice)
    assert b"Manual" in c.get(reverse("corpus:kb_list")).content
    r = c.post(
        reverse("corpus:kb_create"), {"name": "Support FAQ", "chunk_size": 200, "chunk_overlap": 20}
    )
    assert r.status_code == 302 and r["Location"] == reverse(
        "corpus:kb_detail", args=["support-faq"]
    )
    r = c.post(reverse("corpus:kb_create"), {"name": "X", "chunk_size": 100, "chunk_overlap": 90})
    assert r.status_code == 200 and b"overlap" in r.content
    r = c.post(
        reverse("corpus:kb_edit", args=["support-faq"]),
        {"name": "Support", "chunk_size": 250, "chunk_overlap": 25},
    )
    assert r.status_code == 302 and KnowledgeBase.objects.get(slug="support-faq").chunk_size == 250
    r = c.post(reverse("corpus:kb_delete", args=["support-faq"]))
    assert r.status_code == 302 and not KnowledgeBase.objects.filter(slug="support-faq").exists()


def test_it_uploads_with_xhr_and_reports_per_file(
    alice: Any,
    client_for: Callable[[Any], Client],
    kb: KnowledgeBase,
    django_capture_on_commit_callbacks: Any,
) -> None:
    c = client_for(alice)
    url = reverse("corpus:kb_upload", args=[kb.slug])
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post(
            url,
            {
                "files": [
                    SimpleUploadedFile("gps.md", b"# GPS\n\nTurn on location."),
                    SimpleUploadedFile("battery.txt", NASTY),
                ]
            },
            HTTP_ACCEPT="application/json",
        )
    assert r.status_code == 200
    results = r.json()["results"]
    assert [(x["name"], x["ok"], x["duplicate"]) for x in results] == [
        ("gps.md", True, False),
        ("battery.txt", True, True),
    ]
    # A duplicate names and links the document it duplicates.
    existing = Document.objects.get(name="battery.txt")
    assert results[1]["document"] == "battery.txt" and results[1]["id"] == existing.pk
    assert results[1]["url"] == reverse("corpus:document_detail", args=[kb.slug, existing.pk])
    assert Document.objects.get(name="gps.md").status == Document.Status.READY


def test_it_uploads_without_javascript(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase
) -> None:
    c = client_for(alice)
    r = c.post(
        reverse("corpus:kb_upload", args=[kb.slug]),
        {"files": [SimpleUploadedFile("a.txt", b"Some text.")]},
        follow=True,
    )
    assert r.status_code == 200 and b"a.txt: queued" in r.content


def test_it_skips_oversized_files_while_they_stream(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase, settings: Any
) -> None:
    settings.MAX_UPLOAD_BYTES = 4096
    c = client_for(alice)
    r = c.post(
        reverse("corpus:kb_upload", args=[kb.slug]),
        {"files": [SimpleUploadedFile("big.txt", b"x" * 100_000)]},
        HTTP_ACCEPT="application/json",
    )
    assert r.status_code == 413
    assert "larger than the upload limit" in r.json()["results"][0]["error"]
    assert not Document.objects.filter(name="big.txt").exists()


def test_it_polls_the_documents_fragment_while_work_is_in_progress(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase
) -> None:
    c = client_for(alice)
    url = reverse("corpus:kb_detail", args=[kb.slug])
    full = c.get(url)
    assert b"<html" in full.content and b"every 2s" not in full.content
    document_upload(kb=kb, name="queued.txt", chunks=[b"waiting for the worker"], enqueue=False)
    fragment = c.get(url, HTTP_HX_REQUEST="true")
    assert b"<html" not in fragment.content
    assert b'id="documents"' in fragment.content and b"every 2s" in fragment.content
    assert b'role="progressbar"' in fragment.content


def test_it_shows_a_document_with_its_chunks_escaped(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase
) -> None:
    doc = kb.documents.get()
    r = client_for(alice).get(reverse("corpus:document_detail", args=[kb.slug, doc.pk]))
    assert r.status_code == 200
    assert b"&lt;script&gt;" in r.content and b"<script>alert" not in r.content


def test_it_searches_and_highlights_escaped_text(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase
) -> None:
    c = client_for(alice)
    url = reverse("corpus:kb_search", args=[kb.slug])
    for mode in ("hybrid", "dense", "bm25"):
        r = c.get(url, {"q": "charge battery script", "mode": mode, "k": 3})
        assert r.status_code == 200
        assert b"<mark>battery</mark>" in r.content
        assert b"<script>" not in r.content and b"&lt;<mark>script</mark>&gt;" in r.content
    fragment = c.get(url, {"q": "battery"}, HTTP_HX_REQUEST="true")
    assert b"<html" not in fragment.content and b'id="results"' in fragment.content


def test_it_highlights_without_breaking_entities() -> None:
    html = str(highlight("Tom & Jerry <b>amp</b> charging", "amp charge"))
    assert html == "Tom &amp; Jerry &lt;b&gt;<mark>amp</mark>&lt;/b&gt; <mark>charging</mark>"


def test_it_deletes_and_retries_documents(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase
) -> None:
    c = client_for(alice)
    bad = document_upload(
        kb=kb, name="bad.png", chunks=[b"\x89PNG\r\n\x1a\n" + b"\x00" * 50], enqueue=False
    ).document
    document_ingest(document_id=bad.pk)
    r = c.post(reverse("corpus:document_retry", args=[kb.slug, bad.pk]), HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and b'id="documents"' in r.content
    r = c.post(reverse("corpus:document_delete", args=[kb.slug, bad.pk]))
    assert r.status_code == 302 and not Document.objects.filter(pk=bad.pk).exists()
