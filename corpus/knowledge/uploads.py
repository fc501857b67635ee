"""Upload plumbing: safe file names, size limits enforced while streaming, content hashing."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from raftweb.errors import StorageFull, TooLarge, disk_full

_UNSAFE = re.compile(r"[^\w.\- ()+,@]+", re.UNICODE)
MAX_NAME = 200


class UploadTooLarge(TooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(f"file is larger than the upload limit of {human_size(limit)}")
        self.limit = limit


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def sanitize_filename(name: str) -> str:
    """A display- and disk-safe file name: no directories, no control or odd characters.

    ``../../etc/passwd`` → ``passwd``; ``C:\\x\\report.pdf`` → ``report.pdf``; ``.env`` → ``env``.
    """
    name = unicodedata.normalize("NFKC", name or "")
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" ._")
    name = re.sub(r"_+", "_", name)
    if not name:
        return "document"
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = (
            (stem[: MAX_NAME - len(ext) - 1] + "." + ext)
            if dot and len(ext) <= 10
            else name[:MAX_NAME]
        )
    return name


def original_filename(name: str) -> str:
    """The uploaded file's own name, kept beside the sanitised one so that references written
    by people (an evaluation set's gold ``manual#2.pdf``) still find it: no directories and no
    control characters, but otherwise as given (it is escaped wherever it is shown)."""
    name = re.split(r"[\\/]", unicodedata.normalize("NFKC", name or ""))[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:MAX_NAME] or sanitize_filename(name)


def max_upload_bytes() -> int:
    return int(getattr(settings, "MAX_UPLOAD_BYTES", 50 * 1024 * 1024))


def stream_to_temp(
    chunks: Iterable[bytes], *, directory: Path, limit: int
) -> tuple[Path, str, int]:
    """Write ``chunks`` to a temp file while hashing; stop as soon as ``limit`` is exceeded."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if disk_full(exc):
            raise StorageFull(
                "The server's disk is full: the file was not stored (nothing else changed). "
                "Free some space and upload it again."
            ) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), digest.hexdigest(), size


def iter_file(fileobj: Any, block: int = 1024 * 1024) -> Iterable[bytes]:
    """Chunks from a Django UploadedFile, an open binary file, or a path."""
    if hasattr(fileobj, "chunks"):
        yield from fileobj.chunks(block)
        return
    if isinstance(fileobj, (str, Path)):
        with open(fileobj, "rb") as fh:
            yield from iter(lambda: fh.read(block), b"")
        return
    yield from iter(lambda: fileobj.read(block), b"")


class LimitedUploadHandler(FileUploadHandler):
    """Put first in ``request.upload_handlers``: a file past MAX_UPLOAD_BYTES is skipped while
    it streams in (never written out whole); its name lands in ``request.too_large_uploads``."""

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.limit = max_upload_bytes()
        self.received = 0
        if request is not None and not hasattr(request, "too_large_uploads"):
            request.too_large_uploads = []

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            if self.request is not None and self.file_name not in self.request.too_large_uploads:
                self.request.too_large_uploads.append(self.file_name)
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None
