from __future__ import annotations

import pytest
from django.urls import reverse

from corpus.models import QAPair, ReviewEvent


def test_it_limits_the_review_workspace_to_reviewers_and_admins(
    client, client_for, rita, alice, sam, mallory, manual_kb
) -> None:  # type: ignore[no-untyped-def]
    url = reverse("review:queue")
    assert client.get(url).status_code == 302
    assert client_for(mallory).get(url).status_code == 403
    assert client_for(sam).get(url).status_code == 403
    assert client_for(rita).get(url).status_code == 200
    assert client_for(alice).get(url).status_code == 200
    assert client_for(rita).get(reverse("generation:list")).status_code == 403


def test_it_filters_and_sorts_the_queue(client_for, rita, make_pair) -> None:  # type: ignore[no-untyped-def]
    make_pair(question="Low score <b>question</b>?", judge_score=2)
    make_pair(question="High score question?", judge_score=5, status="approved")
    make_pair(question="Unscored question?", judge_score=None)
    c = client_for(rita)
    body = c.get(reverse("review:queue"), {"kb": "manual", "min_score": 4}).content.decode()
    assert "High score question?" in body and "Low score" not in body
    body = c.get(
        reverse("review:queue"), {"kb": "manual", "status": "pending", "sort": "score"}
    ).content.decode()
    assert body.index("Low score &lt;b&gt;question&lt;/b&gt;?") < body.index("Unscored question?")
    assert "<b>question</b>" not in body and "High score question?" not in body
    body = c.get(reverse("review:queue"), {"kb": "manual", "unscored": "1"}).content.decode()
    assert "Unscored question?" in body and "High score" not in body
    partial = c.get(
        reverse("review:queue"), {"kb": "manual"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "<html" not in partial and 'id="queue"' in partial


def test_it_shows_a_pair_with_quotes_marked_and_untrusted_text_escaped(
    client_for, rita, make_pair
) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(
        cot_answer="<script>alert(1)</script> ##begin_quote##press and hold the Side key##end_quote## "
        "and ##begin_quote##the moon is cheese##end_quote##\n<ANSWER>: hold it"
    )
    body = client_for(rita).get(reverse("review:pair", args=[pair.pk])).content.decode()
    assert (
        "<script>alert(1)</script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    )
    assert '<mark class="quote quote-ok"' in body and '<mark class="quote quote-bad"' in body
    assert '<mark class="quoted">press and hold the Side key</mark>' in body
    assert "distractor" in body and 'src="/static/js/review.js"' in body


def test_it_approves_edits_and_records_every_change(client_for, rita, make_pair) -> None:  # type: ignore[no-untyped-def]
    first, second = make_pair(), make_pair(question="Second?")
    c = client_for(rita)
    resp = c.post(
        reverse("review:pair", args=[first.pk]), {"action": "approve", "version": first.version}
    )
    assert resp.status_code == 302 and resp["Location"].startswith(
        reverse("review:pair", args=[second.pk])
    )
    first.refresh_from_db()
    assert first.status == "approved" and first.version == 2 and first.reviewed_by == rita
    resp = c.post(
        reverse("review:pair", args=[second.pk]),
        {
            "action": "edit",
            "version": second.version,
            "question": "Edited?",
            "split": "eval",
            "cot_answer": "##begin_quote##not in the document at all##end_quote##\n<ANSWER>: new",
        },
    )
    assert resp.status_code == 302
    second.refresh_from_db()
    assert second.question == "Edited?" and second.final_answer == "new" and second.split == "eval"
    assert second.quote_status == "unverified"  # re-verified on save
    events = list(ReviewEvent.objects.filter(pair=second))
    assert [e.action for e in events] == ["edit"] and events[0].user == rita
    assert events[0].before["question"] == "Second?" and events[0].after["question"] == "Edited?"
    history = c.get(reverse("review:pair_history", args=[second.pk])).content.decode()
    assert "Edited?" in history and "rita" in history
    assert "approve" in c.get(reverse("review:history"), {"kb": "manual"}).content.decode()


def test_it_gives_the_second_concurrent_editor_a_conflict_and_overwrites_nothing(
    client_for, rita, alice, make_pair
) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    opened = pair.version  # both reviewers opened the same version
    r1 = client_for(rita).post(
        reverse("review:pair", args=[pair.pk]),
        {
            "action": "edit",
            "version": opened,
            "question": "Rita's question?",
            "cot_answer": pair.cot_answer,
            "split": "train",
        },
    )
    assert r1.status_code == 302
    r2 = client_for(alice).post(
        reverse("review:pair", args=[pair.pk]),
        {
            "action": "edit",
            "version": opened,
            "question": "Alice's question?",
            "cot_answer": pair.cot_answer,
            "split": "train",
        },
    )
    assert r2.status_code == 409
    body = r2.content.decode()
    assert "changed by someone else" in body and "Alice&#x27;s question?" in body
    pair.refresh_from_db()
    assert pair.question == "Rita's question?" and pair.version == opened + 1
    assert ReviewEvent.objects.filter(pair=pair).count() == 1


def test_it_applies_bulk_actions_to_a_filter(client_for, rita, make_pair) -> None:  # type: ignore[no-untyped-def]
    good = make_pair(judge_score=5)
    weak = make_pair(judge_score=3)
    bad_quote = make_pair(
        judge_score=5, cot_answer="##begin_quote##invented##end_quote##\n<ANSWER>: x"
    )
    resp = client_for(rita).post(
        reverse("review:bulk"),
        {
            "kb": "manual",
            "action": "approve",
            "min_score": "4",
            "quote": "verified",
            "status": "pending",
        },
    )
    assert resp.status_code == 302
    statuses = dict(QAPair.objects.values_list("pk", "status"))
    assert (
        statuses[good.pk] == "approved"
        and statuses[weak.pk] == "pending"
        and statuses[bad_quote.pk] == "pending"
    )
    assert ReviewEvent.objects.filter(pair=good, action="bulk_approve", user=rita).exists()


def test_it_shows_judge_human_agreement(client_for, rita, make_pair) -> None:  # type: ignore[no-untyped-def]
    for score, status in (
        [(5, "approved")] * 6 + [(4, "approved")] * 2 + [(2, "rejected")] * 3 + [(4, "rejected")]
    ):
        make_pair(judge_score=score, status=status, reviewed_by=rita)
    body = client_for(rita).get(reverse("review:agreement"), {"kb": "manual"}).content.decode()
    assert 'id="n-decided">12<' in body
    assert 'id="best-threshold">≥ 3<' in body or 'id="best-threshold">≥ 4<' in body
    assert 'id="histogram-data"' in body and "chart.umd.min.js" in body
    # 8 approved (all ≥ 3 → judge approve), 4 rejected (3 under 3, one 4): confusion [[8,0],[1,3]]
    assert "<td>8</td><td>0</td>" in body and "<td>1</td><td>3</td>" in body


@pytest.mark.django_db
def test_it_launches_watches_and_cancels_generation_from_the_ui(
    client_for, alice, manual_kb, scripted_profiles, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    scripted_profiles()
    c = client_for(alice)
    assert c.get(reverse("generation:new")).status_code == 200
    bad = c.post(reverse("generation:new"), {"kb": "manual", "p": "7"})
    assert bad.status_code == 400
    form = {
        "kb": "manual",
        "questions_per_chunk": 1,
        "num_distractors": 1,
        "p": 1.0,
        "hard_negative_share": 0,
        "hard_negative_mode": "bm25",
        "refusal_share": 0.5,
        "limit_chunks": 2,
        "max_concurrency": 2,
        "max_new_tokens": 200,
        "judge_enabled": "on",
        "judge_threshold": 3,
        "reject_unverified_quotes": "on",
        "teacher_profile": "teacher",
        "judge_profile": "judge",
        "eval_share": 0.1,
        "seed": 1,
        "document_ids": "",
    }
    with django_capture_on_commit_callbacks(execute=True):
        resp = c.post(reverse("generation:new"), form)
    assert resp.status_code == 302
    job_url = resp["Location"]
    page = c.get(job_url).content.decode()
    assert 'id="job-status">finished<' in page and "2 of 2 chunks done" in page
    fragment = c.get(job_url, {"fragment": "progress"}, HTTP_HX_REQUEST="true").content.decode()
    assert (
        fragment.startswith('<div class="card" id="job-progress"') and "hx-trigger" not in fragment
    )
    assert "finished" in c.get(reverse("generation:list")).content.decode()
    cancel = c.post(job_url + "cancel/")
    assert cancel.status_code == 302
    assert "already finished" in c.get(job_url).content.decode()


def test_it_imports_and_exports_from_the_ui(client_for, alice, make_pair) -> None:  # type: ignore[no-untyped-def]
    from django.core.files.uploadedfile import SimpleUploadedFile

    c = client_for(alice)
    url = reverse("review:kb_dataset", args=["manual"])
    resp = c.get(reverse("review:kb_export", args=["manual"]), {"format": "hf"})
    assert resp.status_code == 302 and resp["Location"] == url
    data = b'{"question": "How do I restart?", "answer": "Open the power menu and tap Restart.", "gold": ["power"]}\nnot json\n'
    resp = c.post(
        url, {"file": SimpleUploadedFile("qa.jsonl", data), "status": "approved", "split": "train"}
    )
    assert resp.status_code == 200
    body = resp.content.decode()
    assert 'id="import-result"><strong>1</strong>' in body and "line 2: invalid JSON" in body
    resp = c.get(reverse("review:kb_export", args=["manual"]), {"format": "chat", "split": "train"})
    assert resp.status_code == 200 and resp["X-Row-Count"] == "1"
    assert b'"messages"' in b"".join(resp.streaming_content)


def test_it_renders_empty_states(client_for, rita, alice, manual_kb) -> None:  # type: ignore[no-untyped-def]
    c = client_for(rita)
    body = c.get(reverse("review:agreement"), {"kb": "manual"}).content.decode()
    assert "Only 0 pairs have both a judge score" in body
    assert "No changes recorded yet." in c.get(reverse("review:history")).content.decode()
    assert "No pairs match" in c.get(reverse("review:queue")).content.decode()
    assert c.get(reverse("review:queue"), {"kb": "nope"}).status_code == 404
    a = client_for(alice)
    assert "No generation job yet." in a.get(reverse("generation:list")).content.decode()
    assert a.get(reverse("review:kb_dataset", args=["manual"])).status_code == 200
    assert a.post(reverse("review:kb_dataset", args=["manual"]), {}).status_code == 400


def test_it_keeps_the_quote_verdict_of_the_job_threshold_after_an_edit(
    rita, manual_kb, make_pair
) -> None:  # type: ignore[no-untyped-def]
    """A job generated with quote_threshold 0.6 verified a loose quote; a reviewer who only
    fixes the question must not see the quote flip to "not found" (re-verification used to
    ignore the job's threshold and apply 0.9)."""
    from corpus.dataset.services import qa_pair_update
    from corpus.models import GenerationJob

    job = GenerationJob.objects.create(kb=manual_kb, config={"quote_threshold": 0.6})
    near = "Push and hold the side button and the volume down key"  # about 0.87 of the oracle
    pair = make_pair(
        job=job, cot_answer=f"It says ##begin_quote##{near}##end_quote##.\n<ANSWER>: Hold both."
    )
    assert pair.quote_status == "verified"
    edited = qa_pair_update(
        pair_id=pair.pk,
        user=rita,
        version=pair.version,
        action="edit",
        question="How to power off?",
    )
    assert edited.question == "How to power off?"
    assert edited.quote_status == "verified" and edited.quote_checks[0]["verified"] is True
    strict = make_pair(cot_answer=f"It says ##begin_quote##{near}##end_quote##.\n<ANSWER>: Hold.")
    assert strict.quote_status == "unverified"  # no job: the default threshold (0.9) applies
