"""`manage.py import_qa <kb-slug> FILE`: import RAFT hf/chat JSONL or plain Q&A JSONL/CSV.

The last line printed is JSON: ``{"imported": n, "duplicates": d, "skipped": [{"line": k,
"error": ...}]}`` (``duplicates``: pairs the knowledge base already has, not imported again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.dataset.io import qa_import
from corpus.dataset.services import QAError
from corpus.management.commands._qa_common import kb_or_error


class Command(BaseCommand):
    help = (
        "Import Q&A pairs (RAFT hf/chat/completion JSONL, or plain question/answer JSONL or CSV)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_slug")
        parser.add_argument("file")
        parser.add_argument("--status", default="pending", choices=["pending", "approved"])
        parser.add_argument(
            "--split",
            default=None,
            choices=["train", "eval"],
            help="default: the split of the pair's gold document",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        kb = kb_or_error(opts["kb_slug"])
        path = Path(opts["file"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            result = qa_import(
                kb=kb, data=data, filename=path.name, status=opts["status"], split=opts["split"]
            )
        except QAError as exc:
            raise CommandError(exc.message) from None
        for item in result["skipped"]:
            self.stderr.write(f"line {item['line']}: {item['error']}")
        self.stdout.write(json.dumps(result))
