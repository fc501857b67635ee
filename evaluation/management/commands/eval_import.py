"""``manage.py eval_import <kb-slug> FILE [--name NAME] [--replace]``: store an external
question set for ``evaluate --set NAME`` and the dashboard.

Lines: ``question`` + ``answer`` (+ optional ``gold`` document names); multiple choice with
``options`` + ``correct``; the RAFT reference ``eval`` format (``question``,
``gold_final_answer``, ``context``) and RAFTweb's own ``--format eval`` export. The last line
printed is JSON: ``{"set", "name", "questions", "mcq", "skipped", "gold_missing"}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.models import KnowledgeBase
from evaluation.services import imported_items, question_set_import
from raftweb.errors import RaftwebError


class Command(BaseCommand):
    help = "Import an external evaluation question set (JSONL) into a knowledge base."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_slug")
        parser.add_argument("file")
        parser.add_argument("--name", help="the set's name (default: the file name)")
        parser.add_argument("--replace", action="store_true", help="replace a set of that name")

    def handle(self, *args: Any, **opts: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=opts["kb_slug"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {opts['kb_slug']!r}.")
        path = Path(opts["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            qset, parsed = question_set_import(
                kb=kb,
                name=opts["name"] or path.stem,
                text=text,
                source=path.name,
                replace=opts["replace"],
            )
        except RaftwebError as exc:
            raise CommandError(exc.message) from None
        for line, message in parsed.errors:
            self.stderr.write(f"{path}:{line}: skipped: {message}")
        missing = sorted({n for q in imported_items(kb, parsed.items) for n in q["gold_missing"]})
        if missing:
            self.stderr.write(f"Gold documents not in {kb.slug!r}: {', '.join(missing)}")
        self.stdout.write(
            json.dumps(
                {
                    "set": qset.pk,
                    "name": qset.name,
                    "questions": len(parsed.items),
                    "mcq": sum(1 for i in parsed.items if i.options),
                    "skipped": len(parsed.errors),
                    "gold_missing": missing,
                }
            )
        )
