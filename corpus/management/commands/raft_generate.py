"""`manage.py raft_generate <kb-slug>`: launch a RAFT generation job (or run it here with --wait);
`--resume JOB` runs a stopped or part-failed job again (only its unfinished chunks and
unanswered questions)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.generation.models import GenerationJob
from corpus.generation.runner import generation_job_run
from corpus.generation.services import generation_job_create, generation_job_resume
from corpus.management.commands._qa_common import kb_or_error
from raftweb.errors import RaftwebError
from raftweb.raft.pipeline import GenerationConfig
from raftweb.typedconfig import add_arguments, values_from_args


class Command(BaseCommand):
    help = (
        "Generate RAFT Q&A pairs for a knowledge base. Without --wait the job is queued for the "
        "worker; with --wait it runs in this process and prints progress. The last line is JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_slug")
        # One flag per generation setting, generated from GenerationConfig (bounds and help
        # included): --questions-per-chunk, --distractors, --p, --no-judge, --limit-chunks, ...
        add_arguments(parser, GenerationConfig)
        parser.add_argument("--config", default="{}", help="more settings as a JSON object")
        parser.add_argument("--wait", action="store_true", help="run here and wait for the end")
        parser.add_argument(
            "--resume",
            type=int,
            metavar="JOB",
            help="resume job JOB of this knowledge base with its own settings: chunks not done "
            "and questions without a row run again, nothing is generated twice",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        kb = kb_or_error(opts["kb_slug"])
        try:
            config = json.loads(opts["config"])
        except ValueError as exc:
            raise CommandError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise CommandError("--config must be a JSON object")
        config.update(values_from_args(GenerationConfig, opts))
        if opts["resume"] is not None and config:
            raise CommandError(
                f"--resume runs job {opts['resume']} with its own settings; drop "
                f"{', '.join(sorted(config))}"
            )
        try:
            if opts["resume"] is not None:
                job = self._resume(kb, opts["resume"], enqueue=not opts["wait"])
            else:
                job = generation_job_create(kb=kb, config=config, enqueue=not opts["wait"])
        except RaftwebError as exc:
            raise CommandError(exc.message) from None
        if opts["wait"]:
            verb = "resuming" if opts["resume"] is not None else "generating from"
            self.stdout.write(f"Job {job.pk}: {verb} {job.chunks_total} chunk(s)…")
            job = generation_job_run(job_id=job.pk)
            for note in job.notes or []:
                self.stdout.write(f"note: {note}")
            if job.error:
                self.stderr.write(job.error)
        summary = {
            "job": job.pk,
            "status": job.status,
            "chunks": job.chunks_total,
            "chunks_done": job.chunks_done,
            "chunks_failed": job.chunks_failed,
            "rows": job.rows,
            "rejected": job.rows_rejected,
            "tokens_in": job.tokens_in,
            "tokens_out": job.tokens_out,
            "cost": round(job.cost, 6),
        }
        self.stdout.write(json.dumps(summary))
        if opts["wait"] and job.status == "failed":
            raise CommandError(job.error or "the job failed")

    @staticmethod
    def _resume(kb: Any, job_id: int, *, enqueue: bool) -> GenerationJob:
        job = GenerationJob.objects.filter(pk=job_id, kb=kb).first()
        if job is None:
            raise CommandError(f"Knowledge base {kb.slug!r} has no generation job {job_id}.")
        return generation_job_resume(job=job, enqueue=enqueue)
