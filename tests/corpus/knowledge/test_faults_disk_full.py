"""Fault: the disk fills up while a file is being written. The write call itself fails with
``OSError(ENOSPC)`` (patched in at the real ``write``, since a test cannot fill a disk); what was
there before stays exactly as it was, no partial file is left, and the user gets a clear error.

Cases: a new version of an uploaded document (the API), and a knowledge-base export written
over an earlier one (the artifact `export_kb` produces)."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from corpus.knowledge import uploads
from corpus.knowledge.indexes import upload_root
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.search import kb_search
from corpus.knowledge.services import document_upload, kb_create
from corpus.models import Chunk, Document

pytestmark = pytest.mark.django_db

V1 = b"Version one. Hold the power button for ten seconds to reset the television."
V2 = b"Version two. " + b"The new firmware changes the reset procedure entirely. " * 300


class FullDisk:
    """A file object whose device has ``room`` bytes left: past that, ``write`` fails the way
    the kernel fails it (ENOSPC)."""

    def __init__(self, real: Any, room: int) -> None:
        self.real, self.room, self.written = real, room, 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()


def _files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_full_disk_during_an_upload_keeps_the_previous_version(
    alice: Any, api_token_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = kb_create(name="TV", slug="tv", user=alice)
    v1 = document_upload(kb=kb, name="manual.txt", chunks=[V1], enqueue=False).document
    document_ingest(document_id=v1.pk)
    before = _files_under(upload_root())
    chunks_before = list(Chunk.objects.values_list("pk", "text"))

    real_fdopen = os.fdopen
    monkeypatch.setattr(
        uploads.os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k), room=8_000)
    )
    response = Client().post(
        "/api/kbs/tv/documents",
        {"files": SimpleUploadedFile("manual.txt", V2)},
        headers={"Authorization": f"Bearer {api_token_for(alice)}"},
    )
    monkeypatch.undo()

    assert response.status_code == 400, response.content
    failed = response.json()["error"]["details"]["failed"]
    assert [(f["name"], f["code"]) for f in failed] == [("manual.txt", "storage_full")]
    assert "disk is full" in failed[0]["error"]
    # Exactly the state before: one document, ready, same bytes on disk, same chunks; no
    # partial upload left in the temp folder.
    assert list(Document.objects.values_list("pk", "version", "status")) == [
        (v1.pk, 1, Document.Status.READY)
    ]
    assert _files_under(upload_root()) == before
    assert list(Chunk.objects.values_list("pk", "text")) == chunks_before
    hit = kb_search(kb=kb, query="reset the television", k=1)[0]
    assert int(hit.chunk_id) == chunks_before[0][0]

    # With room again, the same upload goes through.
    ok = Client().post(
        "/api/kbs/tv/documents",
        {"files": SimpleUploadedFile("manual.txt", V2)},
        headers={"Authorization": f"Bearer {api_token_for(alice)}"},
    )
    assert ok.status_code == 201 and Document.objects.filter(name="manual.txt").count() == 2


def test_a_full_disk_during_an_export_keeps_the_previous_file(
    alice: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    from training import portability

    kb = kb_create(name="TV", slug="tv", user=alice)
    document_ingest(
        document_id=document_upload(
            kb=kb, name="manual.txt", chunks=[V1], enqueue=False
        ).document.pk
    )
    out = tmp_path / "tv.raftkb"
    call_command("export_kb", "tv", str(out), stdout=io.StringIO())
    previous = out.read_bytes()
    # The knowledge base grows (a file that does not compress; no need to index it), and the
    # next export runs out of space half-way.
    noise = base64.b64encode(os.urandom(60_000))
    document_upload(kb=kb, name="big.txt", chunks=[noise], enqueue=False)
    real_zipfile = zipfile.ZipFile

    def tight_zip(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "w":
            file = FullDisk(open(file, "w+b"), room=len(previous) + 2_000)  # noqa: SIM115
        return real_zipfile(file, mode, *args, **kwargs)

    monkeypatch.setattr(portability.zipfile, "ZipFile", tight_zip)
    with pytest.raises(CommandError, match="No space left on device"):
        call_command("export_kb", "tv", str(out), stdout=io.StringIO())
    monkeypatch.undo()
    assert out.read_bytes() == previous, "the earlier export was damaged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tv.raftkb"], "a partial file was left"
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read("manifest.json"))["counts"]["documents"] == 1
