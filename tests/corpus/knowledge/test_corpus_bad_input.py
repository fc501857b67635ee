"""Every bad input from the issue: a clear error, and nothing else lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.db import OperationalError

from corpus.knowledge import ingestion, services
from corpus.knowledge.indexes import CorpusError
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.search import kb_search
from corpus.knowledge.services import document_retry, document_upload, kb_create
from corpus.knowledge.uploads import UploadTooLarge, sanitize_filename
from corpus.models import Chunk, Document
from raftweb.ingest import NO_TEXT_PDF_MESSAGE
from raftweb.retrieval import VectorStoreUnavailable, collection_name
from tests.corpus.corpus_files import CORRUPT_PDF, PNG, pdf_bytes

GOOD = b"Warranty\n\nThe warranty covers manufacturing defects for two years from purchase.\n"


def _ingest(kb: object, name: str, data: bytes) -> Document:
    result = document_upload(kb=kb, name=name, chunks=[data], enqueue=False)
    return document_ingest(document_id=result.document.pk)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("photo.png", PNG, "unsupported file type"),
        ("report.pdf", CORRUPT_PDF, "corrupt PDF"),
        ("locked.pdf", pdf_bytes(["top secret"], password="pw"), "encrypted"),
        ("scan.pdf", pdf_bytes([None, None]), NO_TEXT_PDF_MESSAGE),
        ("blank.txt", b"  \n\n \t ", "empty"),
    ],
)
def test_it_fails_only_the_bad_document_with_a_clear_reason(
    name: str, data: bytes, needle: str
) -> None:
    kb = kb_create(name="KB")
    good = _ingest(kb, "warranty.txt", GOOD)
    bad = _ingest(kb, name, data)
    assert bad.status == Document.Status.FAILED
    assert needle.lower() in bad.error.lower()
    assert not Chunk.objects.filter(document=bad).exists()
    good.refresh_from_db()
    assert good.status == Document.Status.READY
    assert kb_search(kb=kb, query="warranty defects", k=3)[0].document_id == good.pk


@pytest.mark.django_db
def test_it_rejects_an_empty_file_at_upload() -> None:
    kb = kb_create(name="KB")
    with pytest.raises(CorpusError, match="empty"):
        document_upload(kb=kb, name="empty.txt", chunks=[b""], enqueue=False)
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_it_enforces_the_size_limit_while_streaming() -> None:
    kb = kb_create(name="KB")
    produced: list[int] = []

    def endless() -> Iterator[bytes]:
        for i in range(10_000):  # would be 640 MB if read to the end
            produced.append(i)
            yield b"x" * 65536

    with pytest.raises(UploadTooLarge, match="larger than the upload limit"):
        document_upload(
            kb=kb, name="huge.txt", chunks=endless(), max_bytes=1024 * 1024, enqueue=False
        )
    assert len(produced) <= 17  # stopped right after crossing 1 MB
    assert not Document.objects.exists()
    assert list((Path(settings.MEDIA_ROOT) / "tmp").glob("*")) == []


@pytest.mark.django_db
def test_it_uses_the_configured_limit_by_default(settings: object) -> None:
    settings.MAX_UPLOAD_BYTES = 100  # type: ignore[attr-defined]
    kb = kb_create(name="KB")
    with pytest.raises(UploadTooLarge):
        document_upload(kb=kb, name="a.txt", chunks=[b"y" * 101], enqueue=False)
    assert document_upload(kb=kb, name="b.txt", chunks=[b"y" * 100], enqueue=False).created


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("..", "document"),
        (".env", "env"),
        ("we<ird>:na|me?.txt", "we_ird_na_me_.txt"),
        ("tab\tand\x00nul\n.md", "tabandnul.md"),
        ("résumé 2024.docx", "résumé 2024.docx"),
        ("a" * 300 + ".pdf", "a" * 196 + ".pdf"),
    ],
)
def test_it_sanitizes_file_names(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


@pytest.mark.django_db
def test_it_stores_files_with_path_components_inside_the_upload_dir() -> None:
    kb = kb_create(name="KB")
    doc = _ingest(kb, "../../../tmp/evil/../warranty.txt", GOOD)
    assert doc.name == "warranty.txt" and doc.status == Document.Status.READY
    stored = (Path(settings.MEDIA_ROOT) / doc.file_path).resolve()
    assert stored.is_relative_to(Path(settings.MEDIA_ROOT).resolve())
    assert ".." not in doc.file_path


@pytest.mark.django_db(transaction=True)
def test_it_keeps_one_document_when_the_same_file_is_uploaded_twice_at_once() -> None:
    kb = kb_create(name="KB")
    barrier = threading.Barrier(4)
    results: list[object] = []
    errors: list[BaseException] = []

    def upload(i: int) -> None:
        from django.db import connection

        try:
            waited: list[bool] = []

            def chunks() -> Iterator[bytes]:
                if not waited:  # all threads cross this point together, once
                    waited.append(True)
                    barrier.wait(timeout=10)
                yield GOOD

            results.append(
                document_upload(kb=kb, name=f"copy{i}.txt", chunks=chunks(), enqueue=False)
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert Document.objects.filter(kb=kb).count() == 1
    assert len({r.document.pk for r in results}) == 1  # type: ignore[attr-defined]
    assert sum(r.created for r in results) == 1  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_an_upload_that_cannot_be_audited_is_not_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit entry is written in the upload's transaction: when it fails, the upload
    reports the error and keeps no document (before, the document stayed while the upload
    reported an error), and the same file uploads cleanly afterwards."""
    kb = kb_create(name="KB")
    real_audit = services.audit

    def locked(*args: object, **kwargs: object) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "audit", locked)
    with pytest.raises(OperationalError):
        document_upload(kb=kb, name="guide.txt", chunks=[GOOD], enqueue=False)
    assert not Document.objects.filter(kb=kb).exists()

    monkeypatch.setattr(services, "audit", real_audit)
    result = document_upload(kb=kb, name="guide.txt", chunks=[GOOD], enqueue=False)
    assert result.created and result.document.version == 1


@pytest.mark.django_db
def test_it_resolves_the_insert_race_with_the_unique_constraint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deterministic version of the race: the other upload commits between our "already
    there?" check and our insert; the unique (kb, hash) constraint turns that into a dedup."""
    kb = kb_create(name="KB")
    real_atomic = services.transaction.atomic
    competitor: list[object] = []
    started: list[bool] = []

    class RacingTransaction:
        def atomic(self, *args: object, **kwargs: object) -> object:
            if not started:
                started.append(True)
                competitor.append(
                    document_upload(kb=kb, name="other-name.txt", chunks=[GOOD], enqueue=False)
                )
            return real_atomic(*args, **kwargs)

    import django.db.transaction as django_transaction

    monkeypatch.setattr(services, "transaction", RacingTransaction())
    result = document_upload(kb=kb, name="mine.txt", chunks=[GOOD], enqueue=False)
    monkeypatch.setattr(services, "transaction", django_transaction)
    assert competitor and competitor[0].created  # type: ignore[attr-defined]
    assert not result.created
    assert result.document.pk == competitor[0].document.pk  # type: ignore[attr-defined]
    assert Document.objects.filter(kb=kb).count() == 1


class FlakyStore:
    """The real store, which goes down after ``healthy_calls`` upserts (a server dying mid-ingest)."""

    def __init__(self, real: object, healthy_calls: int) -> None:
        self.real = real
        self.left = healthy_calls

    def upsert(self, *args: object, **kwargs: object) -> None:
        if self.left <= 0:
            raise VectorStoreUnavailable(
                "vector store unavailable: ConnectError: [Errno 111] Connection refused"
            )
        self.left -= 1
        self.real.upsert(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


@pytest.mark.django_db
def test_it_fails_with_a_reason_when_the_vector_store_dies_mid_ingest_and_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kb = kb_create(name="KB", chunk_size=20, chunk_overlap=2)
    text = b"\n\n".join(
        f"Section {i} describes feature {i} of the phone in detail.".encode() for i in range(200)
    )
    real = ingestion.vector_store()
    flaky = FlakyStore(real, healthy_calls=1)
    monkeypatch.setattr(ingestion, "vector_store", lambda: flaky)
    upload = document_upload(kb=kb, name="manual.txt", chunks=[text], enqueue=False)
    doc = document_ingest(document_id=upload.document.pk)
    assert doc.status == Document.Status.FAILED
    assert "unavailable" in doc.error and "retry" in doc.error
    total = doc.chunk_count
    embedded = Chunk.objects.filter(document=doc, embedded=True).count()
    assert 0 < embedded < total  # the first batch got in before the store died
    assert kb_search(kb=kb, query="feature 3", mode="bm25", k=3) == []  # not searchable half-done

    monkeypatch.setattr(ingestion, "vector_store", lambda: real)
    document_retry(document=doc)  # queued; the worker (immediate here) would run:
    doc = document_ingest(document_id=doc.pk)
    assert doc.status == Document.Status.READY and doc.error == ""
    assert real.count(collection_name(kb.index_key, "base")) == total  # no duplicates
    hits = kb_search(kb=kb, query="Section 150 describes feature 150", k=3)
    assert hits and "150" in hits[0].text
    assert np.isfinite(hits[0].score)


@pytest.mark.django_db
def test_it_fails_only_the_round_that_hit_a_dead_store_in_bulk_ingest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from corpus.knowledge.ingestion import documents_ingest

    kb = kb_create(name="KB")
    ids = [
        document_upload(
            kb=kb, name=f"doc{i}.txt", chunks=[f"Topic {i}. ".encode() * 20], enqueue=False
        ).document.pk
        for i in range(6)
    ]
    real = ingestion.vector_store()
    flaky = FlakyStore(real, healthy_calls=1)
    monkeypatch.setattr(ingestion, "vector_store", lambda: flaky)
    documents = documents_ingest(document_ids=ids, batch_size=3)  # rounds: docs 0-2, then 3-5
    statuses = [d.status for d in documents]
    assert statuses == [Document.Status.READY] * 3 + [Document.Status.FAILED] * 3
    assert all("unavailable" in d.error for d in documents[3:])
    monkeypatch.setattr(ingestion, "vector_store", lambda: real)
    documents = documents_ingest(document_ids=ids, batch_size=3)  # retry: only the failed ones run
    assert [d.status for d in documents] == [Document.Status.READY] * 6
    assert real.count(collection_name(kb.index_key, "base")) == 6


@pytest.mark.django_db
def test_it_fails_an_archive_bomb_with_the_reason_and_keeps_the_worker_small() -> None:
    """A 0.6 MB DOCX that unpacks to 200 MB drove the worker to 8 GB; now the document fails
    at once with the reason, and the others in the knowledge base are untouched."""
    import psutil

    from tests.engine.test_ingest_guards import MB, _docx_with

    kb = kb_create(name="KB")
    good = document_upload(
        kb=kb, name="ok.txt", chunks=[b"Charging takes two hours."], enqueue=False
    )
    assert document_ingest(document_id=good.document.pk).status == Document.Status.READY
    bomb = _docx_with(pad_document_xml=200 * MB)
    upload = document_upload(kb=kb, name="bomb.docx", chunks=[bomb], enqueue=False)
    rss_before = psutil.Process().memory_info().rss
    doc = document_ingest(document_id=upload.document.pk)
    assert doc.status == Document.Status.FAILED
    assert "DOCX unpacks to" in doc.error and "over the 100 MB limit" in doc.error
    assert doc.chunks.count() == 0
    assert psutil.Process().memory_info().rss - rss_before < 100 * MB
    good.document.refresh_from_db()
    assert good.document.status == Document.Status.READY and good.document.chunks.count() == 1
