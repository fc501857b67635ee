"""Hostile documents: size checks before parsing, time and memory limits in a child process,
and no parse outliving the process that asked for it."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import raftweb.ingest.guard as guard
from raftweb.ingest import (
    DEFAULT_LIMITS,
    CorruptFile,
    EncryptedDocument,
    NoExtractableText,
    ParseError,
    ParseLimits,
    ParserOutOfMemory,
    ParseTimeout,
    TooLarge,
    parse_bytes,
    parse_guarded,
)
from raftweb.ingest.types import MB
from tests.corpus.corpus_files import CORRUPT_PDF, pdf_bytes
from tests.engine.test_ingest_parsers import _docx_bytes

ROOT = Path(__file__).resolve().parents[2]

# Every document goes to a child (small text included), to test the child path itself.
CHILD_ALWAYS = ParseLimits(inline_max_bytes=0)


# --------------------------------------------------------------------------- builders
def _docx_with(extra: dict[str, int] | None = None, *, pad_document_xml: int = 0) -> bytes:
    """A real DOCX (python-docx), rebuilt streaming: ``pad_document_xml`` bytes of XML
    whitespace inside the body, plus ``extra`` members of that many zero bytes. The test's own
    memory stays small whatever the unpacked size."""
    source = zipfile.ZipFile(io.BytesIO(_docx_bytes()))
    out = io.BytesIO()
    chunk = b"\0" * MB
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in source.infolist():
            body = source.read(info)
            if info.filename != "word/document.xml" or not pad_document_xml:
                dst.writestr(info, body)
                continue
            head, tail = body.split(b"<w:body>", 1)
            with dst.open("word/document.xml", "w", force_zip64=True) as f:
                f.write(head + b"<w:body>")
                spaces = b" " * MB
                for _ in range(pad_document_xml // MB):
                    f.write(spaces)
                f.write(tail)
        for name, size in (extra or {}).items():
            with dst.open(name, "w", force_zip64=True) as f:
                for _ in range(size // MB):
                    f.write(chunk)
                f.write(b"\0" * (size % MB))
    return out.getvalue()


def _docx_paragraphs(count: int) -> bytes:
    """A real DOCX whose body holds ``count`` distinct paragraphs (18 MB of XML per 300,000)."""
    source = zipfile.ZipFile(io.BytesIO(_docx_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in source.infolist():
            body = source.read(info)
            if info.filename != "word/document.xml":
                dst.writestr(info, body)
                continue
            head, tail = body.split(b"<w:body>", 1)
            with dst.open("word/document.xml", "w", force_zip64=True) as f:
                f.write(head + b"<w:body>")
                for start in range(0, count, 10_000):
                    f.write(
                        "".join(
                            f"<w:p><w:r><w:t>Paragraph {i} says {i * 7919 % 100003}.</w:t></w:r></w:p>"
                            for i in range(start, min(count, start + 10_000))
                        ).encode()
                    )
                f.write(tail)
    return out.getvalue()


def _slow_pdf(operators: int = 900_000, *, pages: int = 100) -> bytes:
    """A real, tiny PDF (18 kB) whose page content inflates to ``operators`` text-show
    operations: pypdf takes ~48 s a page for 900,000 (under its own limit of 2,000,000 tokens
    per stream), and all pages share the one content stream. A hostile document that only the
    time limit stops.
    """
    from pypdf import PdfWriter
    from pypdf.generic import DictionaryObject, NameObject, StreamObject

    packer = zlib.compressobj(9)
    parts = [packer.compress(b"BT /F1 12 Tf 20 200 Td ")]
    block = b"(word) Tj " * 10_000
    parts += [packer.compress(block) for _ in range(operators // 10_000)]
    parts.append(packer.compress(b"ET") + packer.flush())
    writer = PdfWriter()
    stream = StreamObject()
    stream._data = b"".join(parts)
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    content = writer._add_object(stream)
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for _ in range(pages):
        page = writer.add_blank_page(width=300, height=300)
        page[NameObject("/Contents")] = content
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _fork_servers(root: psutil.Process) -> list[psutil.Process]:
    servers = []
    for child in root.children():
        try:
            if "multiprocessing.forkserver" in " ".join(child.cmdline()):
                servers.append(child)
        except psutil.Error:
            pass
    return servers


def _parse_children(root: psutil.Process) -> list[psutil.Process]:
    """Parse processes started on behalf of ``root``: its fork server's children."""
    found = []
    for server in _fork_servers(root):
        try:
            found += [c for c in server.children() if not _gone(c)]
        except psutil.Error:
            pass
    return found


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead; PID 1 has not reaped it yet
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def seen_children() -> Iterator[dict[int, psutil.Process]]:
    """Every parse child of this process seen while the test runs (polled every 20 ms)."""
    seen: dict[int, psutil.Process] = {}
    stop = threading.Event()
    me = psutil.Process()

    def poll() -> None:
        while not stop.is_set():
            for child in _parse_children(me):
                seen.setdefault(child.pid, child)
            stop.wait(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join()


# --------------------------------------------------------------------------- size checks
def test_it_refuses_a_docx_bomb_from_its_zip_directory_before_parsing() -> None:
    bomb = _docx_with(pad_document_xml=200 * MB)
    assert len(bomb) < 1 * MB  # 200 MB of XML in a few hundred kB
    me = psutil.Process()
    rss_before = me.memory_info().rss
    started = time.monotonic()
    with pytest.raises(TooLarge) as info:
        parse_guarded(bomb, "bomb.docx")
    assert re.fullmatch(r"DOCX unpacks to 20\d MB, over the 100 MB limit", str(info.value))
    assert info.value.code == "too_large"
    assert time.monotonic() - started < 10
    assert me.memory_info().rss - rss_before < 50 * MB


def test_the_zip_check_runs_before_python_docx(monkeypatch: pytest.MonkeyPatch) -> None:
    import docx

    bomb = _docx_with(pad_document_xml=200 * MB)

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("python-docx was handed the bomb")

    monkeypatch.setattr(docx, "Document", must_not_run)
    with pytest.raises(TooLarge, match=r"unpacks to 20\d MB"):
        parse_bytes(bomb, "bomb.docx", limits=DEFAULT_LIMITS)


def test_it_refuses_a_docx_with_too_many_members() -> None:
    data = _docx_with({f"word/media/empty{i}.bin": 0 for i in range(2100)})
    with pytest.raises(TooLarge) as info:
        parse_guarded(data, "many.docx")
    assert "over the 2,000-file limit" in str(info.value)
    assert str(info.value).startswith("DOCX holds 2,1")


def test_it_refuses_a_member_that_inflates_too_much() -> None:
    data = _docx_with({"word/media/zeros.bin": 20 * MB})  # 20 MB < 100 MB, but ~1000:1
    with pytest.raises(TooLarge) as info:
        parse_guarded(data, "ratio.docx")
    message = str(info.value)
    assert "'word/media/zeros.bin'" in message and "over the 100:1 limit" in message


def test_it_refuses_too_many_pdf_pages_before_extracting_any() -> None:
    # Each page would take ~48 s to extract; the page count is read from the page tree first.
    data = _slow_pdf(pages=3)
    started = time.monotonic()
    with pytest.raises(TooLarge) as info:
        parse_guarded(data, "long.pdf", limits=ParseLimits(max_pages=2))
    assert str(info.value) == "PDF has 3 pages, over the 2-page limit"
    assert time.monotonic() - started < 5


def test_it_fails_documents_over_the_character_limit_instead_of_cutting_them() -> None:
    text = ("All work and no play makes Jack a dull boy. " * 30).encode()
    with pytest.raises(TooLarge) as info:
        parse_guarded(text, "jack.txt", limits=ParseLimits(max_chars=1000))
    chars = len(text.strip())
    assert str(info.value) == (
        f"document has {chars:,} characters of text, over the 1,000-character limit"
    )
    pdf = pdf_bytes(["x" * 300, "y" * 300, "z" * 300, "w" * 300])
    with pytest.raises(TooLarge, match=r"1,000-character limit on page 4 of 4"):
        parse_guarded(pdf, "long.pdf", limits=ParseLimits(max_chars=1000))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pages"):
        ParseLimits(max_pages=0)


# --------------------------------------------------------------------------- time and memory
def test_it_kills_a_parse_that_takes_too_long(seen_children: dict[int, psutil.Process]) -> None:
    data = _slow_pdf()
    started = time.monotonic()
    with pytest.raises(ParseTimeout) as info:
        parse_guarded(data, "slow.pdf", limits=ParseLimits(max_seconds=1))
    elapsed = time.monotonic() - started
    assert str(info.value) == "document took longer than 1 s to parse"
    assert info.value.code == "timeout"
    assert elapsed < 6, elapsed
    assert seen_children, "the parse did not run in a child process"
    assert all(_gone(p) for p in seen_children.values())
    assert not _parse_children(psutil.Process())


def test_it_stops_a_parse_that_needs_more_memory_than_allowed() -> None:
    # 18 MB of real paragraph XML: python-docx's tree needs several times that.
    data = _docx_paragraphs(300_000)
    with pytest.raises(ParserOutOfMemory) as info:
        parse_guarded(data, "huge.docx", limits=ParseLimits(max_memory_bytes=64 * MB))
    assert str(info.value).startswith("parser ran out of memory (limit 64 MB)")
    assert info.value.code == "out_of_memory"


# --------------------------------------------------------------------------- same results
def _samples() -> list[tuple[str, bytes, str]]:
    html = (
        b"<!DOCTYPE html><html><head><title>Care guide</title></head><body>"
        b"<nav>Home | About</nav><article><h1>Battery</h1><p>"
        + b"Charge the battery fully before first use. " * 20
        + b"</p></article></body></html>"
    )
    return [
        ("pdf", pdf_bytes(["Page one text", None, "Page three text"]), "a.pdf"),
        ("docx", _docx_bytes(), "manual.docx"),
        ("html", html, "care.html"),
        ("text", b"Plain notes\nThe warranty lasts two years.\n", "notes.txt"),
        ("markdown", b"# Guide\n\nIntro.\n\n## Setup\n\nRun **it**.\n", "guide.md"),
        ("json", b'[{"title": "One", "text": "First record."}]', "data.json"),
    ]


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, CHILD_ALWAYS], ids=["default", "child"])
@pytest.mark.parametrize(("kind", "data", "name"), _samples(), ids=[s[0] for s in _samples()])
def test_normal_documents_parse_exactly_as_parse_bytes(
    kind: str, data: bytes, name: str, limits: ParseLimits
) -> None:
    guarded = parse_guarded(data, name, limits=limits)
    assert guarded.kind == kind
    assert guarded == parse_bytes(data, name)


@pytest.mark.parametrize(
    ("data", "name", "error"),
    [
        (CORRUPT_PDF, "broken.pdf", CorruptFile),
        (pdf_bytes(["secret"], password="pw"), "locked.pdf", EncryptedDocument),
        (pdf_bytes([None]), "scan.pdf", NoExtractableText),
    ],
)
def test_parser_errors_cross_the_process_boundary_unchanged(
    data: bytes, name: str, error: type[ParseError]
) -> None:
    with pytest.raises(error) as direct:
        parse_bytes(data, name)
    with pytest.raises(error) as guarded:
        parse_guarded(data, name, limits=CHILD_ALWAYS)
    assert str(guarded.value) == str(direct.value)
    assert guarded.value.code == direct.value.code


def test_small_text_documents_do_not_pay_for_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_child(*args: object) -> None:
        raise AssertionError("a child process was started")

    monkeypatch.setattr(guard, "_parse_in_child", no_child)
    for data, name in (
        (b"Plain notes about batteries.", "a.txt"),
        (b"# Title\n\nBody.", "b.md"),
        (b'{"text": "a record"}', "c.json"),
    ):
        assert parse_guarded(data, name) == parse_bytes(data, name)
    with pytest.raises(AssertionError, match="child process"):
        parse_guarded(pdf_bytes(["Hello"]), "d.pdf")  # binary formats always go to a child


# --------------------------------------------------------------------------- no orphans
_WORKER = """
import signal, sys, time
from raftweb.ingest import ParseLimits, parse_guarded

if __name__ == "__main__":
    if sys.argv[2] == "handler":  # like a worker that turns SIGTERM into a clean exit
        def stop(signum, frame):
            raise SystemExit(0)
        signal.signal(signal.SIGTERM, stop)
    data = open(sys.argv[1], "rb").read()
    print("parsing", flush=True)
    parse_guarded(data, "slow.pdf", limits=ParseLimits(max_seconds=300))
    print("finished", flush=True)
"""


@pytest.mark.parametrize(
    ("mode", "sig"),
    [("default", signal.SIGTERM), ("handler", signal.SIGTERM), ("default", signal.SIGKILL)],
    ids=["sigterm", "sigterm-handled", "sigkill"],
)
def test_a_stopped_caller_leaves_no_parse_behind(tmp_path: Path, mode: str, sig: int) -> None:
    pdf = tmp_path / "slow.pdf"
    pdf.write_bytes(_slow_pdf())
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, str(script), str(pdf), mode], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    parent = psutil.Process(worker.pid)
    watched: list[psutil.Process] = []
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"parsing\n"
        deadline = time.monotonic() + 30
        while not (children := _parse_children(parent)):
            assert time.monotonic() < deadline, "no parse child appeared"
            time.sleep(0.05)
        # The parse child, the fork server and multiprocessing's resource tracker.
        watched = children + parent.children()
        time.sleep(0.3)  # the child is now deep inside pypdf
        worker.send_signal(sig)
        worker.wait(timeout=10)
        gone_by = time.monotonic() + 10
        while not all(_gone(p) for p in watched):
            assert time.monotonic() < gone_by, [p.pid for p in watched if not _gone(p)]
            time.sleep(0.05)
    finally:
        for process in [*watched, parent]:  # never leave them behind
            if not _gone(process):
                process.kill()
        worker.wait()
    assert worker.stdout.read() == b""  # it never finished the parse


def test_a_child_that_dies_without_an_answer_fails_the_document_with_the_reason() -> None:
    # The mapping of the child's last words (or its exit status) to user-facing errors.
    limits = ParseLimits(max_seconds=30, max_memory_bytes=256 * MB)
    with pytest.raises(ParseTimeout, match="more than 30 s of CPU time"):
        guard._result(None, -signal.SIGXCPU, "x.pdf", limits)
    with pytest.raises(ParseError, match="killed by SIGKILL .*out of memory"):
        guard._result(None, -signal.SIGKILL, "x.pdf", limits)
    with pytest.raises(ParseError, match=r"exited \(code 1\) without a result"):
        guard._result(None, 1, "x.pdf", limits)
    with pytest.raises(ParseError, match="the parser failed: KeyError: 'x'") as info:
        guard._result(
            {"status": "crash", "message": "KeyError: 'x'", "trace": "Traceback..."}, 1, "x", limits
        )
    assert info.value.__notes__ == ["Traceback..."]
    with pytest.raises(CorruptFile, match="corrupt PDF: bad xref"):
        guard._result(
            {"status": "error", "error": "CorruptFile", "message": "corrupt PDF: bad xref"},
            0,
            "x.pdf",
            limits,
        )
    with pytest.raises(ParseError, match="from a plugin") as unknown:
        guard._result(
            {"status": "error", "error": "PluginError", "message": "from a plugin"}, 0, "x", limits
        )
    assert type(unknown.value) is ParseError
