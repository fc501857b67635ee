"""In Chromium: multi-file upload with per-file progress, the live documents table, search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corpus.knowledge.services import kb_create
from corpus.models import Document

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_uploads_several_files_and_searches_in_a_browser(
    alice: Any, live_server: Any, browser_login: Any, tmp_path: Path
) -> None:
    kb_create(name="Manual", slug="manual")
    notes = tmp_path / "notes.txt"
    notes.write_text(
        "Battery\n\nCharge the battery with the USB-C cable; fast charging needs the 25 W adapter."
    )
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    page = browser_login(live_server.url, "alice", "pw-alice")
    page.goto(f"{live_server.url}/kb/manual/")
    page.set_input_files(
        "#upload-input", [str(notes), str(photo)]
    )  # the change event starts the uploads
    rows = page.locator("#upload-list li")
    rows.nth(1).locator(".state.ok").wait_for()
    assert rows.count() == 2
    assert rows.nth(0).locator(".state").inner_text() == "queued"
    assert rows.nth(0).locator(".progress > span").evaluate("e => e.style.width") == "100%"
    # The worker (immediate in tests) has run; the table refreshed itself through htmx.
    page.locator("#documents tr", has_text="photo.png").locator(".badge.error").wait_for()
    page.locator("#documents tr", has_text="notes.txt").locator(".badge.ok").wait_for()
    assert (
        "unsupported file type" in page.locator("#documents tr", has_text="photo.png").inner_text()
    )
    assert Document.objects.get(name="notes.txt").status == Document.Status.READY

    page.goto(f"{live_server.url}/kb/manual/search/")
    page.fill("input[name=q]", "fast charging adapter")
    page.select_option("select[name=mode]", "bm25")
    page.get_by_role("button", name="Search").click()
    page.locator("#results .hit mark").first.wait_for()
    assert "notes.txt" in page.locator("#results .hit").first.inner_text()
    assert "mode=bm25" in page.url  # hx-push-url keeps the search linkable
