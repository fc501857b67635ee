from __future__ import annotations

from django.urls import reverse

from chat.models import Feedback
from corpus.models import QAPair


def test_it_records_thumbs_and_a_comment_and_lets_the_user_change_them(
    sam, chat_kb, client_for, conversation_for, ask_sync
) -> None:
    answer = ask_sync(conversation_for(sam, chat_kb), "How do I reset the television?")
    client = client_for(sam)
    url = reverse("chat:feedback", args=[answer.pk])
    response = client.post(url, {"value": "up"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert 'aria-pressed="true"' in response.content.decode()
    client.post(url, {"value": "down", "comment": "too vague"}, HTTP_HX_REQUEST="true")
    [fb] = Feedback.objects.all()
    assert (fb.value, fb.comment, fb.user, fb.message) == ("down", "too vague", sam, answer)


def test_it_rejects_feedback_on_someone_elses_answer(
    sam, alice, chat_kb, client_for, conversation_for, ask_sync
) -> None:
    answer = ask_sync(conversation_for(sam, chat_kb), "How do I reset the television?")
    response = client_for(alice).post(reverse("chat:feedback", args=[answer.pk]), {"value": "down"})
    assert response.status_code == 404
    assert not Feedback.objects.exists()


def test_it_rejects_a_bad_value(sam, chat_kb, client_for, conversation_for, ask_sync) -> None:
    answer = ask_sync(conversation_for(sam, chat_kb), "How do I reset the television?")
    response = client_for(sam).post(
        reverse("chat:feedback", args=[answer.pk]), {"value": "meh"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert not Feedback.objects.exists()


def test_it_sends_a_thumbs_down_answer_to_review_as_a_candidate_pair(
    sam, alice, chat_kb, client_for, conversation_for, ask_sync
) -> None:
    answer = ask_sync(conversation_for(sam, chat_kb), "How do I reset the television?")
    client_for(sam).post(
        reverse("chat:feedback", args=[answer.pk]), {"value": "down", "comment": "wrong button"}
    )
    fb = Feedback.objects.get()
    admin = client_for(alice)
    listing = admin.get(reverse("chat:feedback_list") + "?value=down")
    assert listing.status_code == 200 and "wrong button" in listing.content.decode()
    response = admin.post(reverse("chat:feedback_review", args=[fb.pk]))
    assert response.status_code == 302
    admin.post(reverse("chat:feedback_review", args=[fb.pk]))  # twice: still one pair
    fb.refresh_from_db()
    assert fb.sent_to_review
    [pair] = QAPair.objects.all()
    assert pair.pk == fb.qa_pair_id
    assert (pair.source, pair.status, pair.kb) == ("chat_feedback", "pending", chat_kb)
    assert pair.question == "How do I reset the television?"
    assert pair.cot_answer == answer.content and pair.final_answer == answer.final
    assert [str(i) for i in pair.context_chunk_ids] == [r["chunk_id"] for r in answer.retrieved]
    assert pair.oracle_chunk_id == int(answer.citations[0]["chunk_id"])
    assert pair.context_texts[pair.oracle_index] == pair.oracle_text
    assert pair.quote_status == "verified"
    assert any("wrong button" in n for n in pair.notes)


def test_it_sends_only_thumbs_down_answers_to_review(
    sam, alice, chat_kb, client_for, conversation_for, ask_sync
) -> None:
    answer = ask_sync(conversation_for(sam, chat_kb), "How do I reset the television?")
    client_for(sam).post(reverse("chat:feedback", args=[answer.pk]), {"value": "up"})
    fb = Feedback.objects.get()
    client_for(alice).post(reverse("chat:feedback_review", args=[fb.pk]))
    assert not QAPair.objects.exists()


def test_it_shows_the_feedback_list_to_admins_only(sam, client_for) -> None:
    assert client_for(sam).get(reverse("chat:feedback_list")).status_code == 403


def test_it_lets_the_asker_send_their_thumbs_down_to_review(
    sam, chat_kb, client_for, conversation_for, ask_sync
) -> None:
    answer = ask_sync(conversation_for(sam, chat_kb), "How do I reset the television?")
    client = client_for(sam)
    url = reverse("chat:feedback", args=[answer.pk])
    client.post(url, {"value": "down"}, HTTP_HX_REQUEST="true")
    response = client.post(
        url, {"send_to_review": "1", "comment": "should mention the remote"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "sent to review" in response.content.decode()
    fb = Feedback.objects.get()
    assert fb.sent_to_review and fb.comment == "should mention the remote"
    assert QAPair.objects.get(pk=fb.qa_pair_id).source == "chat_feedback"
