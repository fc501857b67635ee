"""`manage.py export_kb <kb-slug> FILE`: write a knowledge base (documents with their files,
chunks, Q&A pairs with review history, model version metadata) to one ZIP file."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.management.commands._qa_common import kb_or_error
from raftweb.errors import RaftwebError
from training.portability import kb_export


class Command(BaseCommand):
    help = "Export a knowledge base to a file that `import_kb` reads on another installation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_slug")
        parser.add_argument("file")

    def handle(self, *args: Any, **opts: Any) -> None:
        kb = kb_or_error(opts["kb_slug"])
        try:
            result = kb_export(kb=kb, path=opts["file"])
        except (RaftwebError, OSError) as exc:
            raise CommandError(str(exc)) from None
        for note in result.notes:
            self.stderr.write(f"note: {note}")
        # One JSON line, for scripts.
        self.stdout.write(json.dumps({"exported": kb.slug, "file": opts["file"], **result.counts}))
