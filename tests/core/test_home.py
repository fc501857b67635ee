"""The home page is each role's starting point: admins see their knowledge bases with counts,
running jobs and what needs attention; reviewers their queue per knowledge base; support staff
the knowledge bases they may chat with and their recent conversations."""

from __future__ import annotations

from typing import Any

from django.urls import reverse


def test_it_shows_admins_their_kbs_with_counts_jobs_and_attention(
    client_for: Any, alice: Any, manual_kb: Any, make_pair: Any
) -> None:
    from corpus.models import Document, GenerationJob

    make_pair(status="pending")
    make_pair(status="approved")
    Document.objects.filter(kb=manual_kb).update(status="ready")
    broken = Document.objects.filter(kb=manual_kb).first()
    broken.status = Document.Status.FAILED
    broken.save(update_fields=["status"])
    GenerationJob.objects.create(kb=manual_kb, status="running", chunks_total=10, chunks_done=4)
    GenerationJob.objects.create(kb=manual_kb, status="failed", error="teacher down")
    body = client_for(alice).get(reverse("core:home")).content.decode()
    assert 'data-home="admin"' in body and f'data-kb="{manual_kb.slug}"' in body
    row = body.split(f'data-kb="{manual_kb.slug}"', 1)[1].split("</tr>", 1)[0]
    cells = [c.split(">", 1)[1].split("<", 1)[0].strip() for c in row.split("<td")[1:5]]
    assert cells[1:] == ["3", "6", "2"]  # documents, chunks, pairs
    assert "1 failed" in row and "1 to review" in row
    assert "Generation job" in body and 'data-progress="40"' in body
    assert "failed to ingest" in body and "failed." in body
    assert 'data-home="reviewer"' not in body  # admins see their KBs above, not twice


def test_it_shows_reviewers_their_queue_per_kb(
    client_for: Any, rita: Any, make_pair: Any, manual_kb: Any
) -> None:
    make_pair(status="pending")
    make_pair(status="pending")
    make_pair(status="rejected")
    body = client_for(rita).get(reverse("core:home")).content.decode()
    assert 'data-home="reviewer"' in body and 'data-home="admin"' not in body
    assert "Review 2" in body and f"?kb={manual_kb.slug}&amp;status=pending" in body
    assert "2</strong> pairs wait for you" in body


def test_it_shows_support_staff_their_kbs_and_recent_conversations(
    client_for: Any, sam: Any, manual_kb: Any
) -> None:
    from chat.models import Conversation

    Conversation.objects.create(owner=sam, kb=manual_kb, title="How do I <b>reset</b>?")
    body = client_for(sam).get(reverse("core:home")).content.decode()
    assert 'data-home="support"' in body and 'data-home="reviewer"' not in body
    assert reverse("chat:kb", args=[manual_kb.slug]) in body
    assert "How do I &lt;b&gt;reset&lt;/b&gt;?" in body  # untrusted title, escaped


def test_it_tells_an_admin_with_nothing_yet_what_to_do_first(client_for: Any, alice: Any) -> None:
    body = client_for(alice).get(reverse("core:home")).content.decode()
    assert "No knowledge base yet" in body and reverse("corpus:kb_create") in body
    assert "No generation job is running" in body
