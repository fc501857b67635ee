"""Importing the same file twice adds nothing the second time, and says how many pairs it
skipped as duplicates (same question + answer + knowledge base = the same pair); an imported
pair's page shows its answer once, without the raw <ANSWER>: marker."""

from __future__ import annotations

import json
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from corpus.models import QAPair

LINES = [
    {"question": "How do I restart?", "answer": "Open the power menu and tap Restart.", "gold": ["power"]},
    {"question": "How do I open the camera?", "answer": "Press the Side key twice.", "gold": ["camera"]},
    # the first pair again, differently spaced: the same pair
    {"question": "How do I  restart?", "answer": "Open the power menu and tap Restart. ", "gold": ["power"]},
]  # fmt: skip


def _file(lines: list[dict[str, Any]]) -> SimpleUploadedFile:
    return SimpleUploadedFile("qa.jsonl", "\n".join(json.dumps(x) for x in lines).encode())


def test_it_imports_the_same_file_once_from_the_ui(
    client_for: Any, alice: Any, manual_kb: Any
) -> None:
    c = client_for(alice)
    url = reverse("review:kb_dataset", args=["manual"])
    body = c.post(url, {"file": _file(LINES), "status": "pending"}).content.decode()
    assert 'id="import-result"><strong>2</strong> imported' in body
    assert 'id="import-duplicates">1</strong> skipped as duplicate' in body
    assert QAPair.objects.filter(kb=manual_kb).count() == 2

    body = c.post(url, {"file": _file(LINES), "status": "pending"}).content.decode()
    assert 'id="import-result"><strong>0</strong> imported' in body
    assert 'id="import-duplicates">3</strong> skipped as duplicates' in body
    assert "skipped 3 duplicate(s) already in this knowledge base" in body
    assert QAPair.objects.filter(kb=manual_kb).count() == 2


def test_it_imports_the_same_file_once_over_the_api(
    alice: Any, api_token_for: Any, manual_kb: Any, make_pair: Any
) -> None:
    from django.test import Client

    generated = make_pair()  # a generated pair with the same question and answer counts too
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token_for(alice)}"}
    url = "/api/kbs/manual/qa-pairs/import"
    line = {"question": generated.question, "answer": generated.final_answer, "gold": ["power"]}
    r = Client().post(url, {"file": _file([*LINES[:2], line])}, **auth)
    assert r.status_code == 200, r.content
    assert r.json()["imported"] == 2 and r.json()["duplicates"] == 1
    r = Client().post(url, {"file": _file(LINES)}, **auth)
    assert r.json()["imported"] == 0 and r.json()["duplicates"] == 3
    assert QAPair.objects.filter(kb=manual_kb).count() == 3


def test_it_shows_an_imported_answer_once_without_the_marker(
    client_for: Any, alice: Any, manual_kb: Any
) -> None:
    client_for(alice).post(
        reverse("review:kb_dataset", args=["manual"]), {"file": _file(LINES[:1])}
    )
    pair = QAPair.objects.get(kb=manual_kb)
    body = client_for(alice).get(reverse("review:pair", args=[pair.pk])).content.decode()
    assert body.count("Open the power menu and tap Restart.") == 2  # the answer + the edit box
    shown = body.split('id="final-answer">', 1)[1].split("</div>", 1)[0]
    assert shown.strip() == "Open the power menu and tap Restart."
    page = body.split('id="review-form"', 1)[0]  # outside the edit box
    assert "&lt;ANSWER&gt;:" not in page and "<ANSWER>:" not in page
    assert "No reasoning (an imported question–answer pair)" in page


def test_it_shows_reasoning_with_quotes_and_the_final_answer_apart(
    client_for: Any, rita: Any, make_pair: Any
) -> None:
    pair = make_pair()
    body = client_for(rita).get(reverse("review:pair", args=[pair.pk])).content.decode()
    page = body.split('id="review-form"', 1)[0]
    final = page.split('id="final-answer">', 1)[1].split("</div>", 1)[0]
    assert final.strip() == "Hold the Side and Volume down keys"
    reasoning = page.split('id="answer">', 1)[1].split("</div>", 1)[0]
    assert '<mark class="quote quote-ok"' in reasoning and "ANSWER" not in reasoning
