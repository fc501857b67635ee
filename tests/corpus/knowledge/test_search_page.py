"""The search playground says in words how well each hit matches (not raw fusion scores),
says so when nothing matches well, and bounds the query length like the API does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.relevance import cue_for
from corpus.knowledge.services import document_upload, kb_create
from corpus.models import KnowledgeBase

pytestmark = pytest.mark.django_db

TEXTS = {
    "power.txt": b"Power\n\nTo turn the phone off, press and hold the Side key and the Volume down "
    b"key together. Then tap Power off on the screen to confirm.",
    "camera.txt": b"Camera\n\nThe camera app opens when you press the Side key twice quickly. "
    b"Swipe up or down on the preview screen to switch between the front and rear cameras.",
    "battery.txt": b"Battery\n\nCharge the battery with the USB-C cable; fast charging needs the "
    b"25 W adapter.",
}


@pytest.fixture
def kb() -> KnowledgeBase:
    kb = kb_create(name="Manual", slug="manual")
    for name, text in TEXTS.items():
        result = document_upload(kb=kb, name=name, chunks=[text], enqueue=False)
        document_ingest(document_id=result.document.pk)
    return kb


def _hits(body: str) -> list[str]:
    return [part.split('"', 1)[0] for part in body.split('data-relevance="')[1:]]


def test_it_labels_hits_by_how_well_they_match(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase
) -> None:
    url = reverse("corpus:kb_search", args=[kb.slug])
    c = client_for(alice)
    body = c.get(url, {"q": "how do I switch off my phone", "k": 3}).content.decode()
    levels = _hits(body)
    assert levels[0] == "strong" and "strong match" in body
    assert 'id="no-good-match"' not in body
    assert "score 0.0" not in body  # no raw fusion scores

    body = c.get(url, {"q": "xqzv blorf wumble", "k": 3}).content.decode()
    assert _hits(body) == ["none", "none", "none"]
    assert 'id="no-good-match"' in body and "closest chunks, not answers" in body

    for mode in ("dense", "bm25"):
        body = c.get(url, {"q": "fast charging adapter", "mode": mode, "k": 1}).content.decode()
        assert _hits(body) == ["strong"], mode


def test_it_bounds_the_query_like_the_api(
    alice: Any, client_for: Callable[[Any], Client], kb: KnowledgeBase, settings: Any
) -> None:
    settings.MAX_QUERY_CHARS = 50
    url = reverse("corpus:kb_search", args=[kb.slug])
    r = client_for(alice).get(url, {"q": "b" * 80}, HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert r.status_code == 200 and 'role="alert"' in body
    assert "The query is 80 characters long; the limit is 50." in body
    assert "data-relevance" not in body


def test_it_judges_a_lexical_match_generously_and_gibberish_never() -> None:
    assert cue_for(0.6, lexical=False).level == "strong"
    assert cue_for(0.35, lexical=False).level == "weak"
    assert cue_for(0.22, lexical=True).level == "weak"
    assert cue_for(0.22, lexical=False).level == "none"
    assert cue_for(None, lexical=False).level == "none"
