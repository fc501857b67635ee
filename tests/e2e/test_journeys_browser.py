"""Each role's journeys in a real Chromium (issue 13): the home page is each role's starting
point; the KB page links onwards, fits a phone, and shows a spinner while slow requests run;
the new-job form preselects the only KB and warns of an unavailable model before queueing;
a failed job's bar is not a full blue one; form labels read like words; nothing is loaded from
another origin and nothing is a 404 (the favicon included).

With RAFTWEB_SCREENSHOTS=<folder> the tests also save the screenshots the README shows
(`make screenshots` in readme terms: see docs/screenshots/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = os.environ.get("RAFTWEB_SCREENSHOTS", "")
PHONE = {
    "power.md": b"# Power\n\nTo turn the phone off, press and hold the Side key and the Volume "
    b"down key together. Then tap Power off on the screen to confirm.\n\nTo restart the "
    b"device, open the power menu and tap Restart.",
    "camera.md": b"# Camera\n\nThe camera app opens when you press the Side key twice "
    b"quickly. Swipe up or down on the preview screen to switch cameras.",
    "battery.md": b"# Battery\n\nCharge the battery with the USB-C cable; fast charging needs "
    b"the 25 W adapter.",
}
LONG_NAME = "Service_manual_for_the_X200_series_including_every_appendix_and_errata_2026.pdf"


def shot(page: Any, name: str) -> None:
    """Save a screenshot for the README when asked to: the top of the page, small (< 150 KB)."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    path = Path(SHOTS) / f"{name}.png"
    height = page.viewport_size["height"]
    while True:
        clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height}
        page.screenshot(path=str(path), clip=clip)
        if path.stat().st_size < 150_000 or height <= 400:
            return
        height -= 100


def _installed(name: str, *args: Any) -> bool:
    from django.urls import NoReverseMatch, reverse

    try:
        reverse(name, args=args)
    except NoReverseMatch:
        return False
    return True


def watch(page: Any, base_url: str) -> dict[str, list[str]]:
    """Every request to another origin, and every 404, while the page is in use."""
    seen: dict[str, list[str]] = {"foreign": [], "missing": []}
    origin = urlsplit(base_url)[:2]

    def on_request(request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob"):
            return
        if (parts.scheme, parts.netloc) != origin:
            seen["foreign"].append(request.url)

    page.on("request", on_request)
    page.on("response", lambda r: seen["missing"].append(r.url) if r.status == 404 else None)
    return seen


@pytest.fixture
def world(manual_kb: Any, make_pair: Any, alice: Any, rita: Any, sam: Any) -> Any:
    from chat.models import Conversation
    from corpus.models import Document, GenerationJob

    Document.objects.filter(kb=manual_kb, name="camera.txt").update(
        name=LONG_NAME, status=Document.Status.FAILED, error="unsupported file type (x-tar)"
    )
    make_pair(question="How do I turn the phone off?")
    make_pair(question="How do I restart the phone?", status="approved")
    GenerationJob.objects.create(
        kb=manual_kb, status="failed", chunks_total=6, chunks_done=2, chunks_failed=1,
        error="the teacher model is unavailable",
    )  # fmt: skip
    Conversation.objects.create(owner=sam, kb=manual_kb, title="How do I turn the phone off?")
    return manual_kb


def test_it_starts_an_admin_at_their_kbs_and_walks_the_kb_journey(
    live_server: Any, browser_login: Any, world: Any
) -> None:
    page = browser_login(live_server.url, "alice", "pw-alice")
    seen = watch(page, live_server.url)
    page.goto(live_server.url + "/")
    page.wait_for_load_state("networkidle")
    row = page.locator(f'#home-kbs tr[data-kb="{world.slug}"]')
    assert row.locator("td").nth(1).inner_text().startswith("3")  # documents
    assert row.locator("td").nth(2).inner_text() == "6"  # chunks
    assert "2" in row.locator("td").nth(3).inner_text()  # pairs
    attention = page.locator("#home-jobs .attention").inner_text()
    assert "failed to ingest" in attention and "Generation job" in attention
    shot(page, "admin-home")

    # The KB page links to every next step, and its links work.
    row.locator("a").first.click()
    page.wait_for_url(f"**/kb/{world.slug}/")
    links = page.locator("#kb-links a").all_inner_texts()
    for label in ("Dataset: import / export", "Generate Q&A", "Review", "Training", "Chat"):
        assert label in links, links
    assert ("Evaluation" in links) == _installed("evaluation:kb", world.slug)
    shot(page, "admin-kb")

    # A phone: nothing sticks out sideways, even a long file name and its error.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_load_state("networkidle")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "admin-kb-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.click("#kb-links >> text=Dataset: import / export")
    page.wait_for_selector("text=Export")
    page.go_back()
    page.click("#kb-links >> text=Review")
    page.wait_for_selector("#queue")
    assert page.locator("#f-kb").input_value() == world.slug
    assert not seen["foreign"], seen["foreign"]
    assert not seen["missing"], seen["missing"]


def test_it_shows_a_spinner_while_a_search_runs(
    live_server: Any, browser_login: Any, world: Any
) -> None:
    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload, kb_create

    phone = kb_create(name="Phone manual", slug="phone")
    for name, text in PHONE.items():
        result = document_upload(kb=phone, name=name, chunks=[text], enqueue=False)
        document_ingest(document_id=result.document.pk)
    page = browser_login(live_server.url, "alice", "pw-alice")
    page.goto(f"{live_server.url}/kb/{phone.slug}/search/")
    # Record whether the busy signs were ever on: the request may be quick.
    page.evaluate(
        """() => {
          window.__busy = {bar: false, inline: false};
          const note = () => {
            if (document.getElementById('busy').classList.contains('htmx-request')) window.__busy.bar = true;
            if (document.getElementById('search-busy').classList.contains('htmx-request')) window.__busy.inline = true;
          };
          new MutationObserver(note).observe(document.body, {attributes: true, subtree: true, attributeFilter: ['class']});
        }"""
    )
    page.fill("input[name=q]", "turn the phone off")
    page.get_by_role("button", name="Search").click()
    # (the first search of this process may load the embedding model)
    page.wait_for_selector("#results .hit, #results .empty-state, #results .flash", timeout=60_000)
    shot(page, "admin-search")
    assert page.locator("#results .hit").first.get_attribute("data-relevance") == "strong"
    busy = page.evaluate("window.__busy")
    assert busy == {"bar": True, "inline": True}
    # When it is done the signs are gone again.
    assert "htmx-request" not in (page.locator("#busy").get_attribute("class") or "")


def test_it_preselects_the_only_kb_and_warns_of_an_unavailable_teacher(
    live_server: Any, browser_login: Any, world: Any
) -> None:
    page = browser_login(live_server.url, "alice", "pw-alice")
    page.goto(f"{live_server.url}/generation/new/")
    assert page.locator("#id_kb").input_value() == world.slug
    # The default teacher is a hub id and no hub is reachable here: say so before queueing.
    warning = page.locator('#profile-warnings [data-profile="teacher"]')
    warning.wait_for(timeout=30_000)
    assert "teacher model is unavailable" in warning.inner_text()
    assert "Qwen/Qwen2.5-0.5B-Instruct" in warning.locator(".detail").text_content()
    assert warning.locator("a").get_attribute("href") == "/settings/models/teacher/"
    shot(page, "admin-new-job")

    # A failed job's bar: its done part is not the accent blue, its failed part is red.
    page.goto(f"{live_server.url}/generation/")
    bar = page.locator("#jobs-table .progress").first
    assert "is-failed" in (bar.get_attribute("class") or "")
    colours = bar.locator("span").evaluate_all(
        "spans => spans.map(s => [s.className, getComputedStyle(s).backgroundColor, s.style.width])"
    )
    accent = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()"
    )
    assert accent == "#2f5bea"
    assert [c[0] for c in colours] == ["done-part", "failed-part"]
    assert colours[0][1] != "rgb(47, 91, 234)" and colours[1][1] == "rgb(196, 50, 10)"
    assert [c[2] for c in colours] == ["33%", "17%"]


def test_it_labels_model_profile_fields_in_words(
    live_server: Any, browser_login: Any, world: Any
) -> None:
    page = browser_login(live_server.url, "alice", "pw-alice")
    page.goto(f"{live_server.url}/settings/models/teacher/")
    labels = page.locator("form label").all_inner_texts()
    for label in ("Base URL", "API key", "Timeout (s)"):
        assert label in labels, labels
    for wrong in ("Base url", "Api key", "Timeout s"):
        assert wrong not in labels


def test_it_starts_a_reviewer_at_their_queue(
    live_server: Any, browser_login: Any, world: Any
) -> None:
    page = browser_login(live_server.url, "rita", "pw-rita")
    seen = watch(page, live_server.url)
    page.goto(live_server.url + "/")
    review = page.locator("#home-review")
    assert "1 pair waits for you" in review.inner_text()
    assert page.locator("#home-kbs").count() == 0
    shot(page, "reviewer-home")
    review.locator("a", has_text="Review 1").click()
    page.wait_for_selector("#queue")
    assert page.locator("#queue tbody tr").count() == 1
    shot(page, "reviewer-queue")
    page.click("#queue tbody tr a[data-pair-link]")
    page.wait_for_selector("#review-form")
    assert page.locator("#final-answer").inner_text() == "Hold the Side and Volume down keys"
    shot(page, "reviewer-pair")
    assert not seen["foreign"] and not seen["missing"], seen


def test_it_starts_support_staff_at_their_kbs_and_conversations(
    live_server: Any, browser_login: Any, world: Any
) -> None:
    page = browser_login(live_server.url, "sam", "pw-sam")
    seen = watch(page, live_server.url)
    page.goto(live_server.url + "/")
    chat = page.locator("#home-chat")
    assert chat.locator("a.button", has_text=world.name).count() == 1
    assert "How do I turn the phone off?" in chat.locator(".conversation-list").inner_text()
    shot(page, "support-home")
    chat.locator("a.button", has_text=world.name).click()
    page.wait_for_url(f"**/chat/kb/{world.slug}/**")
    assert not seen["foreign"] and not seen["missing"], seen


def test_it_loads_the_api_docs_from_this_origin_only(
    live_server: Any, browser_login: Any, world: Any
) -> None:
    page = browser_login(live_server.url, "alice", "pw-alice")
    seen = watch(page, live_server.url)
    page.goto(f"{live_server.url}/api/docs")
    page.wait_for_selector(".swagger-ui .info", timeout=20_000)
    assert not seen["foreign"], seen["foreign"]
    assert not seen["missing"], seen["missing"]


def test_it_loads_no_admin_page_from_another_origin(
    live_server: Any, browser_login: Any, world: Any
) -> None:
    from django.urls import reverse

    page = browser_login(live_server.url, "alice", "pw-alice")
    seen = watch(page, live_server.url)
    urls = [
        reverse("corpus:kb_list"),
        reverse("corpus:kb_create"),
        reverse("corpus:kb_search", args=[world.slug]) + "?q=phone",
        reverse("review:kb_dataset", args=[world.slug]),
        reverse("review:agreement"),
        reverse("generation:list"),
        reverse("training:home"),
        reverse("chat:home"),
        reverse("core:profiles"),
        reverse("core:tokens"),
    ]
    if _installed("evaluation:home"):
        urls.append(reverse("evaluation:home"))
    for url in urls:
        # (the search page may load the embedding model first)
        assert page.goto(live_server.url + url, timeout=60_000).status == 200, url
        page.wait_for_load_state("networkidle")
    assert not seen["foreign"], seen["foreign"]
    assert not seen["missing"], seen["missing"]
