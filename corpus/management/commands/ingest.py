"""python manage.py ingest <kb-slug> <path>... [--create]

Uploads files (folders recursively) through the same service as the UI and API, ingests them
in this process (batched across documents), and prints, as its LAST line, exactly:
{"kb": slug, "documents": n, "chunks": n, "failed": [{"path": ..., "error": ...}]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.knowledge.indexes import CorpusError
from corpus.knowledge.ingestion import documents_ingest
from corpus.knowledge.services import document_upload, kb_create
from corpus.knowledge.uploads import UploadTooLarge, iter_file
from corpus.models import Document, KnowledgeBase


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            )
        else:
            out.append(path)
    return out


class Command(BaseCommand):
    help = "Ingest files or folders (recursively) into a knowledge base."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb", help="knowledge base slug")
        parser.add_argument("paths", nargs="+", help="files or folders")
        parser.add_argument(
            "--create", action="store_true", help="create the knowledge base if it is missing"
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1024,
            help="chunks per embedding round (sorted by length inside, so bigger pads less)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["kb"]
        kb = KnowledgeBase.objects.filter(slug=slug).first()
        if kb is None:
            if not options["create"]:
                raise CommandError(f"knowledge base {slug!r} does not exist (use --create)")
            try:
                kb = kb_create(name=slug, slug=slug)
            except CorpusError as exc:
                raise CommandError(str(exc)) from exc
        failed: list[dict[str, str]] = []
        doc_paths: dict[int, str] = {}
        for path in _files(options["paths"]):
            if not path.exists():
                failed.append({"path": str(path), "error": "no such file or directory"})
                continue
            try:
                result = document_upload(
                    kb=kb, name=path.name, chunks=iter_file(path), enqueue=False
                )
            except (UploadTooLarge, CorpusError, OSError) as exc:
                failed.append({"path": str(path), "error": str(exc)})
                continue
            doc_paths.setdefault(result.document.pk, str(path))
        documents = documents_ingest(document_ids=list(doc_paths), batch_size=options["batch_size"])
        ready = 0
        chunks = 0
        for doc in documents:
            if doc.status == Document.Status.READY:
                ready += 1
                chunks += doc.chunk_count
                self.stdout.write(f"ok      {doc_paths[doc.pk]} ({doc.chunk_count} chunks)")
            else:
                failed.append({"path": doc_paths[doc.pk], "error": doc.error or doc.status})
                self.stdout.write(f"failed  {doc_paths[doc.pk]}: {doc.error}")
        self.stdout.write(
            json.dumps({"kb": kb.slug, "documents": ready, "chunks": chunks, "failed": failed})
        )
