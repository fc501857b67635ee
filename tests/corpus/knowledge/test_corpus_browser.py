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
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    assert page.locator("#kb-chunks").inner_text() == "0 chunks"
    # Choosing the files starts the uploads; there is no second button to upload them again.
    assert not page.locator("#upload-submit").is_visible()
    page.set_input_files("#upload-input", [str(notes), str(photo)])
    rows = page.locator("#upload-list li")
    # Each row follows its document: the text file becomes ready, the PNG fails (it never
    # stays a green "queued" while the table says failed).
    # (the first ingestion loads the embedding model: allow for a busy machine)
    rows.nth(0).locator(".state.ok", has_text="ready").wait_for(timeout=60_000)
    rows.nth(1).locator(".state.error").wait_for()
    assert rows.count() == 2
    assert "unsupported file type" in rows.nth(1).locator(".state").inner_text()
    assert rows.nth(0).locator(".progress > span").evaluate("e => e.style.width") == "100%"
    page.locator("#documents tr", has_text="photo.png").locator(".badge.error").wait_for()
    page.locator("#documents tr", has_text="notes.txt").locator(".badge.ok").wait_for()
    assert (
        "unsupported file type" in page.locator("#documents tr", has_text="photo.png").inner_text()
    )
    assert Document.objects.get(name="notes.txt").status == Document.Status.READY
    # The KB's chunk count follows the documents without a reload.
    chunks = Document.objects.get(name="notes.txt").chunk_count
    assert chunks > 0
    page.locator("#kb-chunks", has_text=f"{chunks} chunk").wait_for()
    page.wait_for_timeout(300)  # a second upload of the same files would have started by now
    assert len([u for u in posts if u.endswith("/kb/manual/upload/")]) == 2

    # The same file again: one row, naming and linking the document it duplicates.
    copy = tmp_path / "notes-copy.txt"
    copy.write_bytes(notes.read_bytes())
    page.set_input_files("#upload-input", [str(copy)])
    duplicate = rows.nth(2).locator(".state a")
    duplicate.wait_for()
    assert duplicate.inner_text() == "notes.txt"
    doc = Document.objects.get(name="notes.txt")
    assert duplicate.get_attribute("href") == f"/kb/manual/documents/{doc.pk}/"
    assert rows.nth(2).locator(".state").inner_text() == "already uploaded as notes.txt"
    assert Document.objects.filter(kb__slug="manual").count() == 2

    page.goto(f"{live_server.url}/kb/manual/search/")
    page.fill("input[name=q]", "fast charging adapter")
    page.select_option("select[name=mode]", "bm25")
    page.get_by_role("button", name="Search").click()
    page.locator("#results .hit mark").first.wait_for()
    assert "notes.txt" in page.locator("#results .hit").first.inner_text()
    assert "mode=bm25" in page.url  # hx-push-url keeps the search linkable
