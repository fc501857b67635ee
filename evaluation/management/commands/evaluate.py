"""``manage.py evaluate <kb-slug> [--questions FILE] --config "emb=base,gen=base" ...
[--mode hybrid|dense|bm25] [--k 5] [--limit N] [--wait]``

Without --wait the run is queued for the worker; with --wait it runs here. The last line
printed is JSON (a contract)::

    {"run": id, "questions": n, "configs": [{"config": "emb=base,gen=base",
     "metrics": {"recall@k": x, ..., "tokens_per_s": x}, "counts": {...}}]}

A metric that could not be computed is null, with the reason in ``counts[metric]["reason"]``.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.models import KnowledgeBase
from evaluation.models import EvalRun, QuestionSet
from evaluation.runner import eval_run_execute
from evaluation.selectors import run_report
from evaluation.services import eval_run_cancel, eval_run_start
from raftweb.errors import RaftwebError
from raftweb.eval.configs import DEFAULT_K, DEFAULT_MODE, MODES, parse_configs
from raftweb.eval.questions import parse_question_lines


class Command(BaseCommand):
    help = (
        "Evaluate configurations (embedding version x generator) of a knowledge base on its "
        "eval split or a question file. The last line printed is JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_slug")
        parser.add_argument(
            "--config",
            action="append",
            default=[],
            metavar="SPEC",
            help='e.g. "emb=base,gen=base", "emb=active,gen=version:3", "gen=profile:judge"',
        )
        parser.add_argument("--questions", metavar="FILE", help="JSONL question file")
        parser.add_argument("--set", metavar="NAME", help="a question set imported by eval_import")
        parser.add_argument("--mode", choices=MODES, default=DEFAULT_MODE)
        parser.add_argument("--k", type=int, default=DEFAULT_K)
        parser.add_argument("--limit", type=int, metavar="N", help="the first N questions only")
        parser.add_argument("--wait", action="store_true", help="evaluate here and wait")

    def handle(self, *args: Any, **opts: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=opts["kb_slug"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {opts['kb_slug']!r}.")
        items, qset, source = None, None, ""
        if opts["questions"] and opts["set"]:
            raise CommandError("Give --questions or --set, not both.")
        if opts["questions"]:
            path = Path(opts["questions"])
            if not path.is_file():
                raise CommandError(f"No such file: {path}")
            parsed = parse_question_lines(path.read_text(encoding="utf-8", errors="replace"))
            for line, message in parsed.errors:
                self.stderr.write(f"{path}:{line}: skipped: {message}")
            items, source = parsed.items, f"file {path.name}"
        elif opts["set"]:
            qset = QuestionSet.objects.filter(kb=kb, name=opts["set"]).first()
            if qset is None:
                raise CommandError(f"{kb.slug!r} has no question set {opts['set']!r}.")
        try:
            configs = parse_configs(opts["config"] or ["emb=active,gen=active"])
            run = eval_run_start(
                kb=kb,
                configs=configs,
                mode=opts["mode"],
                k=opts["k"],
                question_set=qset,
                items=items,
                source=source,
                limit=opts["limit"],
                enqueue=not opts["wait"],
            )
        except RaftwebError as exc:
            raise CommandError(exc.message) from None
        if run.gold_missing:
            self.stderr.write(
                "Gold documents not in the knowledge base (their questions are not scored for "
                f"retrieval): {', '.join(run.gold_missing)}"
            )
        self.stdout.write(
            f"Run {run.pk}: {run.total_units} answers to give "
            f"({len(configs)} configurations, source: {run.source})"
        )
        if opts["wait"]:
            run = self._wait(run)
            if run.judge_unavailable:
                self.stderr.write(f"Judge unavailable: {run.judge_unavailable}")
            if run.error:
                self.stderr.write(run.error)
        else:
            self.stdout.write(f"Run {run.pk} is {run.status}; the worker evaluates it.")
        self.stdout.write(json.dumps(run_report(run), default=str))
        if opts["wait"] and run.status != EvalRun.Status.SUCCEEDED:
            raise CommandError(f"evaluation run {run.pk} {run.status}")

    def _wait(self, run: EvalRun) -> EvalRun:
        """Evaluate here; Ctrl-C cancels after the current question (a second one leaves)."""

        def cancel(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, previous)
            self.stderr.write("Cancelling after the current question…")
            try:
                eval_run_cancel(run=EvalRun.objects.get(pk=run.pk))
            except RaftwebError:
                pass

        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, cancel) if main else None
        try:
            return eval_run_execute(run_id=run.pk)
        finally:
            if main and signal.getsignal(signal.SIGINT) is cancel:
                signal.signal(signal.SIGINT, previous)
