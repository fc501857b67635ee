"""python manage.py retrieval_eval <kb-slug> <questions.jsonl> [--mode hybrid|dense|bm25]
[--embedding base|active|<version>] [--k 1 5 10]

Each input line: {"question": "...", "gold": ["<document name>", ...]}. The LAST line printed
is exactly {"questions": n, "recall@1": x, "recall@5": x, "recall@10": x, "mrr": x}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.knowledge.indexes import CorpusError
from corpus.knowledge.search import kb_retrieval_evaluate
from corpus.models import KnowledgeBase


class Command(BaseCommand):
    help = "Document-level retrieval recall@k and MRR of a knowledge base on a question set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb")
        parser.add_argument("questions", help="JSONL: {'question': ..., 'gold': [document names]}")
        parser.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
        parser.add_argument(
            "--embedding", default="active", help="base, active, or an embedding version label"
        )
        parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 10])
        parser.add_argument(
            "--details", action="store_true", help="print each question's ranking first"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"knowledge base {options['kb']!r} does not exist")
        path = Path(options["questions"])
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        questions = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    questions.append(json.loads(line))
                except ValueError as exc:
                    raise CommandError(f"{path}:{n}: not JSON ({exc})") from exc
        try:
            result = kb_retrieval_evaluate(
                kb=kb,
                questions=questions,
                mode=options["mode"],
                k_values=options["k"],
                embedding_version=options["embedding"],
            )
        except CorpusError as exc:
            raise CommandError(str(exc)) from exc
        details = result.pop("details")
        if options["details"]:
            for d in details:
                self.stdout.write(json.dumps(d, ensure_ascii=False))
        self.stdout.write(json.dumps(result))
