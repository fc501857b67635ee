"""python manage.py retrieval_eval <kb-slug> <questions.jsonl> [--mode hybrid|dense|bm25]
[--embedding base|active|<version>] [--k 1 5 10]

Each input line: {"question": "...", "gold": ["<document name>", ...]}. The LAST line printed
is exactly {"questions": n, "recall@1": x, "recall@5": x, "recall@10": x, "mrr": x}.

Gold names match a document's stored (sanitised) file name or its original upload name, with
or without the extension. Names matching no document are reported (stderr, and a
``{"gold_missing": [...], "skipped_questions": n}`` line before the last); questions naming
only those are not scored rather than counted as misses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.knowledge.indexes import CorpusError
from corpus.knowledge.search import kb_retrieval_evaluate
from corpus.models import Document, KnowledgeBase
from raftweb.eval.gold import DocName, gold_index, match_gold


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
        questions, missing, skipped = _gold_as_stored_names(kb, questions)
        if missing:
            self.stderr.write(
                f"Gold documents not in {kb.slug!r} (by stored or original file name): "
                f"{', '.join(missing)}; {skipped} question(s) naming only those are not scored."
            )
        if not questions:
            raise CommandError(
                "No question names a gold document of this knowledge base; nothing to score."
            )
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
        if missing:
            self.stdout.write(json.dumps({"gold_missing": missing, "skipped_questions": skipped}))
        self.stdout.write(json.dumps(result))


def _gold_as_stored_names(
    kb: KnowledgeBase, questions: list[Any]
) -> tuple[list[dict[str, Any]], list[str], int]:
    """Each question's gold names matched against the KB's documents by stored (sanitised) or
    original upload name, rewritten to the stored names search results carry. Names that match
    nothing are returned, and a question left with no gold is skipped - never a miss."""
    index = gold_index(
        DocName(i, n, o or "")
        for i, n, o in Document.objects.filter(kb=kb).values_list("id", "name", "original_filename")
    )
    stored = dict(Document.objects.filter(kb=kb).values_list("id", "name"))
    kept: list[dict[str, Any]] = []
    missing: set[str] = set()
    skipped = 0
    for q in questions:
        if not isinstance(q, dict):
            raise CommandError(f"each line must be a JSON object: {q!r}")
        raw = q.get("gold") or []
        names = [raw] if isinstance(raw, str) else [g for g in raw if isinstance(g, str)]
        found = match_gold(names, index)
        missing.update(found.unmatched)
        if names and not found.doc_ids:
            skipped += 1
            continue
        kept.append({**q, "gold": sorted({stored[i] for i in found.doc_ids}) or raw})
    return kept, sorted(missing), skipped
