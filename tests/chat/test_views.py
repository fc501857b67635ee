from __future__ import annotations

import re

import pytest
from django.urls import reverse

from chat.models import Conversation


def test_it_lists_the_kbs_a_support_user_may_chat_with(sam, make_kb, client_for) -> None:
    make_kb("tv")
    make_kb("vault", groups=("admin",))  # restricted to a group sam is not in
    response = client_for(sam).get(reverse("chat:home"))
    assert response.status_code == 200
    body = response.content.decode()
    assert reverse("chat:kb", args=["tv"]) in body
    assert "vault" not in body


def test_it_keeps_users_without_the_chat_role_out(
    mallory, rita, chat_kb, client_for, client
) -> None:
    assert client_for(mallory).get(reverse("chat:home")).status_code == 403
    assert client_for(rita).get(reverse("chat:home")).status_code == 403
    response = client.get(reverse("chat:home"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_it_starts_a_conversation_and_shows_the_chat_page(sam, chat_kb, client_for) -> None:
    client = client_for(sam)
    response = client.post(reverse("chat:new", args=[chat_kb.slug]))
    assert response.status_code == 302
    conv = Conversation.objects.get(owner=sam)
    assert response["Location"] == reverse("chat:conversation", args=[conv.pk])
    page = client.get(response["Location"])
    assert page.status_code == 200
    body = page.content.decode()
    assert f'ws-connect="/ws/chat/{conv.pk}/"' in body
    assert "htmx-ext-ws.js" in body and 'hx-ext="ws"' in body


def test_it_returns_404_for_someone_elses_conversation(
    sam, alice, chat_kb, client_for, conversation_for
) -> None:
    conv = conversation_for(sam, chat_kb)
    for user in (alice,):
        client = client_for(user)
        assert client.get(reverse("chat:conversation", args=[conv.pk])).status_code == 404
        assert client.post(reverse("chat:delete", args=[conv.pk])).status_code == 404
    assert Conversation.objects.filter(pk=conv.pk).exists()


def test_it_hides_a_restricted_kb_from_chat(sam, make_kb, client_for, conversation_for) -> None:
    from django.contrib.auth.models import Group

    from corpus.knowledge.services import kb_update

    kb = make_kb("secret")
    conv = conversation_for(sam, kb)
    kb_update(kb=kb, allowed_groups=[Group.objects.create(name="vip")])
    client = client_for(sam)
    assert client.get(reverse("chat:kb", args=["secret"])).status_code == 404
    assert client.post(reverse("chat:new", args=["secret"])).status_code == 404
    assert client.get(reverse("chat:conversation", args=[conv.pk])).status_code == 404
    chunk = kb.documents.first().chunks.first()
    assert client.get(reverse("chat:source", args=[chunk.pk])).status_code == 404
    # Joining the group opens it again.
    sam.groups.add(Group.objects.get(name="vip"))
    assert client_for(sam).get(reverse("chat:kb", args=["secret"])).status_code == 200


def test_it_opens_the_cited_source_with_the_quote_highlighted(
    sam, chat_kb, client_for, conversation_for, ask_sync
) -> None:
    conv = conversation_for(sam, chat_kb)
    answer = ask_sync(conv, "How do I reset the television?")
    [citation] = answer.citations
    page = client_for(sam).get(reverse("chat:conversation", args=[conv.pk])).content.decode()
    href = re.search(r'href="(/chat/source/[^"]+)"', page).group(1).replace("&amp;", "&")
    response = client_for(sam).get(href)
    assert response.status_code == 200
    body = response.content.decode()
    assert "manual.txt" in body
    marked = re.search(r'<mark id="quote-0">(.*?)</mark>', body).group(1)
    assert marked == citation["quote"]


def test_it_escapes_a_hostile_source_before_highlighting(
    sam, make_kb, client_for, conversation_for, ask_sync
) -> None:
    kb = make_kb(
        "hostile",
        {"evil.html.txt": "Hold power. <script>alert(1)</script> <b onmouseover=x>bold</b> end."},
    )
    conv = conversation_for(sam, kb)
    answer = ask_sync(conv, "power?")
    chunk_id = answer.citations[0]["chunk_id"]
    body = client_for(sam).get(f"/chat/source/{chunk_id}/?m={answer.pk}&n=1").content.decode()
    assert "<script>alert" not in body and "<b onmouseover" not in body
    assert "&lt;script&gt;" in body
    assert '<mark id="quote-0">Hold power.</mark>' in body


def test_it_does_not_show_a_source_through_someone_elses_message(
    sam, alice, chat_kb, client_for, conversation_for, ask_sync
) -> None:
    answer = ask_sync(conversation_for(sam, chat_kb), "How do I reset the television?")
    chunk_id = answer.citations[0]["chunk_id"]
    assert client_for(alice).get(f"/chat/source/{chunk_id}/?m={answer.pk}&n=1").status_code == 404
    assert client_for(alice).get(reverse("chat:message", args=[answer.pk])).status_code == 404


@pytest.mark.parametrize("status", ["ok", "pending"])
def test_it_serves_one_message_for_polling(
    status, sam, chat_kb, client_for, conversation_for
) -> None:
    conv = conversation_for(sam, chat_kb)
    msg = conv.messages.create(
        role="assistant", status=status, final="Hold the button.", outcome="answered"
    )
    body = client_for(sam).get(reverse("chat:message", args=[msg.pk])).content.decode()
    assert f'id="msg-{msg.pk}"' in body
    assert ('hx-trigger="every 1s"' in body) == (status == "pending")


def test_it_deletes_ones_own_conversation(sam, chat_kb, client_for, conversation_for) -> None:
    conv = conversation_for(sam, chat_kb)
    response = client_for(sam).post(reverse("chat:delete", args=[conv.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("chat:kb", args=[chat_kb.slug])
    assert not Conversation.objects.filter(pk=conv.pk).exists()
