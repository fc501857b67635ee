"""Hostile text in every free-text field, rendered on every page that shows it.

The world of this module (conftest.build_world with ``PAYLOAD``) carries the payload in KB
names and descriptions, document names, chunk text, Q&A questions, answers, judge reasons
and notes, job errors, conversation titles, chat questions, model output (final answer,
reasoning, citation quotes, model name), feedback comments, token names and model profile
fields. Each page is fetched as a user who may see it (full page and htmx fragment) and
parsed: no script, no event-handler attribute, no ``javascript:`` URL, no svg/iframe may come
from the payload — while the payload's marker text must be on the page (escaped), so a page
that simply dropped the data cannot pass.

Review of the code paths that bypass autoescaping (grep for ``|safe``, ``mark_safe``,
``format_html``, ``autoescape off``, ``innerHTML``), each checked here with real data:
- templates/chat/partials/message.html ``final_html|safe`` / ``reasoning_html|safe``:
  chat/rendering.py renders Markdown with raw HTML off, then nh3 allowlist → chat pages below;
- templates/chat/conversation.html ``html|safe``: chat/fragments.render_message output (a
  rendered, autoescaped template) → chat:conversation;
- templates/chat/source.html ``chunk_html|safe``: chat/rendering.highlight_spans escapes each
  slice → chat:source;
- corpus/review_render.py ``mark_safe`` (render_answer / render_highlighted): escape first,
  then our own <mark> → review:pair;
- corpus/highlight.py ``mark_safe``: escape first, never inside an entity → corpus:kb_search;
- chat/views.py ``HttpResponse(f"...{escape(exc)}")``: escaped; static/js uses textContent only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from tests.security.conftest import World, module_world_for
from tests.security.hostile import MARK, PAYLOAD, assert_safe

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def hostile_module_world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with module_world_for(PAYLOAD, django_db_blocker) as world:
        with django_db_blocker.unblock():
            _add_hostile_extras(world)
        yield world


def _add_hostile_extras(w: World) -> None:
    from corpus.generation.prompts import kb_prompts_update
    from raftweb.core.models import ModelProfile
    from raftweb.core.services import profiles_ensure
    from raftweb.raft.prompts import PromptSet

    profiles_ensure()
    # Stored profile values (from the API or an older version) are shown on the settings pages.
    ModelProfile.objects.filter(role="student").update(
        model="/nonexistent/tiny" + PAYLOAD, adapter_path="/adapters" + PAYLOAD
    )
    ModelProfile.objects.filter(role="judge").update(base_url="http://127.0.0.1:9/v1" + PAYLOAD)
    kb_prompts_update(kb=w.tv, overrides={next(iter(PromptSet().as_dict())): "Custom" + PAYLOAD})


@pytest.fixture
def hw(hostile_module_world: World, django_db_blocker: Any) -> Iterator[World]:
    from tests.security.conftest import savepoint_world

    with savepoint_world(hostile_module_world, django_db_blocker) as w:
        yield w


def _client(w: World, user: str) -> Client:
    c = Client()
    c.force_login(w.users[user])
    return c


HTMX = {"HX-Request": "true"}


def _pages(w: World) -> list[tuple[str, str, dict[str, str], bool]]:
    """(user, url, headers, payload must show) for every page that shows stored text."""
    q = "?q=" + "reset" + PAYLOAD.replace("#", "")
    pages: list[tuple[str, str, dict[str, str], bool]] = []

    def add(user: str, url: str, htmx: bool = False, must_show: bool = True) -> None:
        pages.append((user, url, {}, must_show))
        if htmx:
            pages.append((user, url, HTMX, must_show))

    add("alice", reverse("core:home"), must_show=False)
    add("alice", reverse("core:tokens"), htmx=True)
    add("alice", reverse("core:profiles"))
    add("alice", reverse("core:profile_edit", args=["student"]))
    add("alice", reverse("core:profile_status"))
    add("alice", reverse("corpus:kb_list"))
    add("alice", reverse("corpus:kb_detail", args=["tv"]), htmx=True)
    add("alice", reverse("corpus:kb_edit", args=["tv"]))
    add("alice", reverse("corpus:kb_delete", args=["tv"]))
    add("alice", reverse("corpus:kb_search", args=["tv"]) + q, htmx=True)
    add("alice", reverse("corpus:document_detail", args=["tv", w.doc.pk]), htmx=True)
    add("alice", reverse("corpus:document_detail", args=["tv", w.failed_doc.pk]))
    add("alice", reverse("review:queue") + "?kb=tv", htmx=True)
    add(
        "alice",
        reverse("review:queue") + "?kb=tv&q=" + MARK + PAYLOAD.replace("#", ""),
        must_show=True,
    )
    add("alice", reverse("review:pair", args=[w.pair.pk]))
    add("alice", reverse("review:pair_history", args=[w.pair.pk]), must_show=False)  # no events yet
    add("alice", reverse("review:history") + "?kb=tv")
    add("alice", reverse("review:agreement") + "?kb=tv")
    add("alice", reverse("generation:list"), htmx=True)
    add("alice", reverse("generation:detail", args=[w.failed_job.pk]))
    pages.append(
        (
            "alice",
            reverse("generation:detail", args=[w.failed_job.pk]) + "?fragment=progress",
            HTMX,
            False,
        )
    )
    add("alice", reverse("generation:new") + "?kb=tv")
    add("alice", reverse("review:kb_dataset", args=["tv"]))
    add("alice", reverse("generation:kb_prompts", args=["tv"]))
    add("alice", reverse("chat:home"))
    add("alice", reverse("chat:kb", args=["tv"]))
    add("alice", reverse("chat:feedback_list"))
    add("rita", reverse("review:queue") + "?kb=tv")
    add("rita", reverse("review:pair", args=[w.pair.pk]))
    add("sam", reverse("chat:home"))
    add("sam", reverse("chat:kb", args=["tv"]))
    add("sam", reverse("chat:conversation", args=[w.conversation.pk]))
    add("sam", reverse("chat:message", args=[w.answer.pk]))
    add("sam", reverse("chat:source", args=[w.chunk.pk]) + f"?m={w.answer.pk}&n=1")
    add("sam", reverse("core:tokens"))
    return pages


def test_it_escapes_stored_hostile_text_on_every_page(hw: World) -> None:
    w = hw
    clients = {u: _client(w, u) for u in ("alice", "rita", "sam")}
    failures = []
    for user, url, headers, must_show in _pages(w):
        response = clients[user].get(url, headers=headers)
        if response.status_code != 200:
            failures.append(f"{user} {url}: HTTP {response.status_code}")
            continue
        try:
            assert_safe(
                response.content.decode(), f"{user} GET {url} {headers or ''}", must_show=must_show
            )
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


def test_it_escapes_hostile_text_echoed_from_forms_and_messages(hw: World) -> None:
    w = hw
    alice, rita, sam = (_client(w, u) for u in ("alice", "rita", "sam"))
    # a KB created with a hostile name: the flash message and the pages after the redirect
    response = alice.post(
        reverse("corpus:kb_create"),
        {"name": "Evil" + PAYLOAD, "chunk_size": 300, "chunk_overlap": 30},
        follow=True,
    )
    assert_safe(response.content.decode(), "kb_create → detail")
    # an upload with a hostile file name: per-file flash messages
    response = alice.post(
        reverse("corpus:kb_upload", args=["tv"]),
        {
            "files": [
                SimpleUploadedFile("x" + PAYLOAD.replace("/", "") + ".txt", b"hello there"),
                SimpleUploadedFile("empty" + PAYLOAD.replace("/", "") + ".txt", b""),
            ]
        },
        follow=True,
    )
    assert_safe(response.content.decode(), "kb_upload → detail")
    # a form re-rendered with the user's input (invalid generation settings)
    data = {
        "kb": "tv",
        "questions_per_chunk": 1,
        "num_distractors": 1,
        "p": 0.8,
        "hard_negative_share": 0.5,
        "hard_negative_mode": "hybrid",
        "refusal_share": 0.1,
        "document_ids": "1," + PAYLOAD,
        "max_concurrency": 1,
        "max_new_tokens": 900,
        "judge_threshold": 3,
        "teacher_profile": "teacher",
        "judge_profile": "judge",
        "eval_share": 0.2,
        "seed": 1,
    }
    response = alice.post(reverse("generation:new"), data)
    assert response.status_code == 400
    assert_safe(response.content.decode(), "generation_new (invalid)")
    # a review conflict (409) shows the reviewer's own unsaved text back
    response = rita.post(
        reverse("review:pair", args=[w.pair.pk]),
        {
            "action": "edit",
            "version": w.pair.version + 5,
            "question": "Q" + PAYLOAD,
            "cot_answer": "A" + PAYLOAD,
        },
    )
    assert response.status_code == 409
    assert_safe(response.content.decode(), "review pair conflict")
    # an import with hostile rows and lines that are skipped with a reason
    lines = [
        json.dumps({"question": "Imported" + PAYLOAD, "answer": "Answer" + PAYLOAD}),
        "{not json" + PAYLOAD,
        json.dumps({"question": "", "answer": PAYLOAD}),
    ]
    response = alice.post(
        reverse("review:kb_dataset", args=["tv"]),
        {
            "file": SimpleUploadedFile(
                "pairs" + PAYLOAD.replace("/", "") + ".jsonl", "\n".join(lines).encode()
            ),
            "status": "pending",
        },
    )
    assert_safe(response.content.decode(), "kb_dataset import")
    response = alice.get(reverse("review:queue") + "?kb=tv&status=pending")
    assert_safe(response.content.decode(), "queue after import")
    # a token named with the payload (full page and htmx fragment)
    response = sam.post(reverse("core:tokens"), {"name": "tok" + PAYLOAD[:90]}, headers=HTMX)
    assert_safe(response.content.decode(), "token created (htmx)")
    # feedback with a hostile comment, answered as an htmx fragment, then listed for admins
    response = sam.post(
        reverse("chat:feedback", args=[w.answer.pk]),
        {"value": "down", "comment": "c" + PAYLOAD},
        headers=HTMX,
    )
    assert response.status_code == 200
    assert_safe(response.content.decode(), "feedback (htmx)", must_show=False)
    assert_safe(alice.get(reverse("chat:feedback_list")).content.decode(), "feedback list")
    # ...and sent to review: the chat question and model answer become a pair reviewers open
    from corpus.models import QAPair

    sam.post(
        reverse("chat:feedback", args=[w.answer.pk]),
        {"send_to_review": "1", "comment": "again" + PAYLOAD},
    )
    from_chat = QAPair.objects.get(source=QAPair.Source.CHAT_FEEDBACK)
    for url in (
        reverse("review:queue") + "?kb=tv&source=chat_feedback",
        reverse("review:pair", args=[from_chat.pk]),
    ):
        assert_safe(rita.get(url).content.decode(), f"rita {url}")
    # the login page, reached through a hostile ?next=
    response = Client().get(
        reverse("corpus:kb_list") + "?x=" + PAYLOAD.replace("#", ""), follow=True
    )
    assert response.redirect_chain and response.status_code == 200
    assert_safe(response.content.decode(), "login with hostile next", must_show=False)


def test_it_sanitises_hostile_markdown_in_model_output(hw: World) -> None:
    """Links a model might write to get script into the chat: none survives as a link."""
    from chat.models import Message

    w = hw
    tricks = (
        "[a](javascript:alert(1)) [b](JaVaScRiPt:alert(1)) [c](data:text/html;base64,PHNjcmlwdD4=) "
        "[d](vbscript:msgbox(1)) <javascript:alert(1)> [e](java\tscript:alert(1)) "
        '![i](x" onerror="alert(1)) <b onmouseover=alert(1)>b</b> ' + MARK
    )
    Message.objects.filter(pk=w.answer.pk).update(final=tricks, reasoning=tricks, content=tricks)
    sam = _client(w, "sam")
    for url in (
        reverse("chat:conversation", args=[w.conversation.pk]),
        reverse("chat:message", args=[w.answer.pk]),
    ):
        assert_safe(sam.get(url).content.decode(), url)


def test_it_numbers_more_than_ten_citations_without_mixing_them_up() -> None:
    """Citation placeholders end in X<index>: X1 must not also replace the start of X10."""
    from chat.rendering import render_with_citations
    from raftweb.raft.citations import Citation

    quotes = [f"quote number {i} here" for i in range(12)]
    text = " ".join(f"##begin_quote##{q}##end_quote##" for q in quotes)
    citations = [
        Citation(n=i + 1, quote=q, verified=True, document="d") for i, q in enumerate(quotes)
    ]
    html = render_with_citations(text, citations)
    assert "CITE" not in html
    for i, q in enumerate(quotes):
        assert f">{q}</q>" in html, f"quote {i} lost"


@pytest.mark.parametrize(
    "html, bad",
    [
        ("<p>&lt;script&gt;alert(1)&lt;/script&gt; PWNMARK</p>", False),
        ('<p title="&lt;img src=x onerror=alert(1)&gt;">PWNMARK</p>', False),
        ('<p>&lt;a href="javascript:alert(1)"&gt; PWNMARK</p>', False),
        ("<p><script>alert(1)</script>PWNMARK</p>", True),
        ("<p><img src=x onerror=alert(1)>PWNMARK</p>", True),
        ('<p><a href=" JavaScript:alert(1)">x</a>PWNMARK</p>', True),
        ('<p><a title="" onmouseover="alert(1)">x</a>PWNMARK</p>', True),
        ("<p><svg/onload=alert(1)>PWNMARK</p>", True),
    ],
)
def test_it_has_a_scanner_that_tells_escaped_from_live_markup(html: str, bad: bool) -> None:
    """The checks above are only as good as this scanner."""
    if bad:
        with pytest.raises(AssertionError):
            assert_safe(html, "sample")
    else:
        assert_safe(html, "sample")


HOSTILE_TEXTS = [
    PAYLOAD,
    "&lt;script&gt; already-escaped &amp; &#x27; &quot; text with lt gt amp quot",
    "<mark>fake highlight</mark><scr<script>ipt>alert(1)</script>",
    "unterminated <img src=x onerror=alert(1) and \u2028 separators",
]


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_it_highlights_by_escaping_first_then_marking(text: str) -> None:
    """The three highlighters that return safe HTML: removing their own <mark> tags and
    unescaping must give back exactly the input — nothing dropped, nothing turned into markup."""
    import html as htmllib
    import re

    from chat.rendering import highlight_spans
    from corpus.dataset.render import render_highlighted
    from corpus.knowledge.highlight import highlight

    query = "script alert img onerror lt gt amp quot x27 mark highlight text"
    outputs = {
        "corpus.highlight": str(highlight(text, query)),
        "review_render.render_highlighted": str(
            render_highlighted(text, [(0, 12), (5, 30), (len(text) - 3, 999)])
        ),
        "chat.highlight_spans": highlight_spans(text, [(0, 12), (5, 30), (len(text) - 3, 999)]),
    }
    for name, out in outputs.items():
        assert_safe(out, name, must_show=False)
        stripped = re.sub(r'<mark( id="quote-\d+"| class="quoted")?>|</mark>', "", out)
        assert "<" not in stripped, f"{name}: markup other than <mark> in {out!r}"
        assert htmllib.unescape(stripped) == text, f"{name}: text changed"
