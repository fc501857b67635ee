"""`manage.py import_kb FILE [--slug SLUG] [--no-index]`: rebuild a knowledge base written by
`export_kb`, then embed and index its documents here."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from raftweb.errors import RaftwebError
from training.portability import kb_import


class Command(BaseCommand):
    help = "Import a knowledge base exported by `export_kb` (from this or another installation)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--slug", default=None, help="import under this slug instead")
        parser.add_argument(
            "--no-index",
            action="store_true",
            help="create the rows only; index later (Retry on the KB page, or `ingest`)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            result = kb_import(path=opts["file"], slug=opts["slug"], ingest=not opts["no_index"])
        except RaftwebError as exc:
            raise CommandError(exc.message) from None
        for note in result.notes:
            self.stderr.write(f"note: {note}")
        self.stdout.write(json.dumps({"imported": result.kb.slug, **result.counts}))
