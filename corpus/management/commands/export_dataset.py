"""`manage.py export_dataset <kb-slug> --format hf|chat|completion|eval -o FILE
[--no-completion-stop]`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.dataset.io import qa_export_lines
from corpus.dataset.services import QAError
from corpus.management.commands._qa_common import kb_or_error
from raftweb.raft.formats import COMPLETION_STOP, EXPORTERS


class Command(BaseCommand):
    help = "Export a knowledge base's Q&A pairs as JSONL in a RAFT format."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_slug")
        parser.add_argument("--format", required=True, choices=sorted(EXPORTERS), dest="fmt")
        parser.add_argument("--split", default="train", choices=["train", "eval", "all"])
        parser.add_argument("--status", default="approved", choices=["approved", "all"])
        parser.add_argument("--system-prompt", default=None, help="chat format: system persona")
        parser.add_argument(
            "--no-completion-stop",
            action="store_true",
            help=f"completion format: do not end completions with {COMPLETION_STOP} (the RAFT "
            "reference's stop word, on by default)",
        )
        parser.add_argument("-o", "--output", required=True)

    def handle(self, *args: Any, **opts: Any) -> None:
        kb = kb_or_error(opts["kb_slug"])
        try:
            count, lines = qa_export_lines(
                kb=kb,
                fmt=opts["fmt"],
                split=opts["split"],
                status=opts["status"],
                system=opts["system_prompt"],
                stop="" if opts["no_completion_stop"] else COMPLETION_STOP,
            )
        except QAError as exc:
            raise CommandError(exc.message) from None
        out = Path(opts["output"])
        out.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so a failure never leaves a partial file.
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.writelines(lines)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.stdout.write(
            f"Exported {count} row(s) ({opts['fmt']}, split {opts['split']}, "
            f"status {opts['status']}) to {out}"
        )
