"""`manage.py train <kb-slug> --kind generator|embedding`: fine-tune on a KB's approved pairs.

Without --wait the run is queued for the worker; with --wait the worker-side code runs here
(the training script is still a subprocess) and the command waits for the end. The last line
printed is always JSON: ``{"run", "status", "version", "metrics"}``.

``--wait --activate`` runs the promotion gate first: the new version is evaluated against the
active one on the KB's eval split and is not activated when it regresses on a gate metric
(``RAFTWEB_EVAL_GATE_METRICS``), unless ``--force`` is given.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.models import KnowledgeBase
from raftweb.errors import RaftwebError
from training.activation import PromotionRefused, active_model_set, promotion_check
from training.models import ModelKind, ModelVersion, TrainingRun
from training.runner import CANCEL_FILE, training_run_execute
from training.services import (
    METHODS,
    training_overrides,
    training_run_cancel,
    training_run_start,
)


class Command(BaseCommand):
    help = (
        "Fine-tune the generator or the embedding model of a knowledge base on its approved Q&A "
        "pairs. Without --wait the run is queued for the worker; with --wait it runs here. "
        "The last line printed is JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_slug")
        parser.add_argument("--kind", required=True, choices=ModelKind.values)
        parser.add_argument("--method", choices=METHODS)
        parser.add_argument("--preset", help="a training recipe (e.g. cpu-smoke, lora-1gpu)")
        parser.add_argument("--base-model", metavar="ID_OR_PATH", help="the model to fine-tune")
        parser.add_argument("--epochs", type=float, metavar="N")
        parser.add_argument("--lr", type=float, metavar="X", help="learning rate")
        parser.add_argument("--config", default="{}", help="more config values as a JSON object")
        parser.add_argument("--wait", action="store_true", help="train here and wait for the end")
        parser.add_argument(
            "--activate", action="store_true", help="make the new version active if it succeeds"
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="with --activate: activate even if the version regresses on the eval split",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=opts["kb_slug"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {opts['kb_slug']!r}.")
        try:
            overrides = json.loads(opts["config"])
        except ValueError as exc:
            raise CommandError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise CommandError("--config must be a JSON object")
        try:
            overrides.update(
                training_overrides(
                    kind=opts["kind"],
                    preset=opts["preset"],
                    base_model=opts["base_model"],
                    epochs=opts["epochs"],
                    learning_rate=opts["lr"],
                )
            )
            run = training_run_start(
                kb=kb,
                kind=opts["kind"],
                method=opts["method"],
                preset=opts["preset"],
                overrides=overrides,
                # With --wait the promotion gate runs here, after training (see _activate);
                # a queued run is activated by the worker, which checks recorded evaluations.
                activate=opts["activate"] and not opts["wait"],
                enqueue=not opts["wait"],
            )
        except RaftwebError as exc:
            raise CommandError(exc.message) from None
        if opts["wait"]:
            self.stdout.write(
                f"Run {run.pk}: {run.rows_train} train / {run.rows_eval} eval rows in {run.run_dir} "
                f"(log: {Path(run.run_dir) / 'log.txt'})"
            )
            run = self._wait(run)
            if run.error:
                self.stderr.write(run.error)
        version = ModelVersion.objects.filter(run=run).values_list("pk", flat=True).first()
        refused = ""
        if opts["wait"] and opts["activate"] and version is not None:
            refused = self._activate(ModelVersion.objects.get(pk=version), force=opts["force"])
        self.stdout.write(
            json.dumps(
                {"run": run.pk, "status": run.status, "version": version, "metrics": run.metrics},
                default=str,
            )
        )
        if refused:
            raise CommandError(refused)
        if opts["wait"] and run.status != TrainingRun.Status.SUCCEEDED:
            # The error itself (with the end of the script's log) went to stderr above.
            raise CommandError(f"training run {run.pk} {run.status}")

    def _activate(self, version: ModelVersion, *, force: bool) -> str:
        """The promotion gate: evaluate the new version against the active one on the KB's
        eval split and activate it unless it regresses (or ``force``). Returns the refusal."""
        report = None
        if not force:
            self.stdout.write(f"Evaluating {version.label} against the active {version.kind}…")
            try:
                report = promotion_check(version, evaluate=True)
            except PromotionRefused as exc:
                self._gate_lines(exc.details.get("gate", {}))
                return f"not activated: {exc.message}"
        if report is not None:
            self._gate_lines(report.as_dict())
        try:
            active_model_set(version=version, force=True)
        except RaftwebError as exc:
            return f"not activated: {exc.message}"
        self.stdout.write(f"Activated {version.label}.")
        return ""

    def _gate_lines(self, gate: dict[str, Any]) -> None:
        if gate.get("note"):
            self.stdout.write(f"Promotion gate: {gate['note']}")
        for d in gate.get("deltas", []):
            mark = "REGRESSES" if d.get("regressed") else "ok"
            self.stdout.write(
                f"  {d['metric']}: active {d['active']} -> candidate {d['candidate']} ({mark})"
            )

    def _wait(self, run: TrainingRun) -> TrainingRun:
        """Watch the run here; while another run of the KB trains, wait for its turn. Ctrl-C asks
        the script to stop (the run ends as cancelled); a second Ctrl-C leaves at once."""
        run_dir = Path(run.run_dir)

        def cancel(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, previous)
            self.stderr.write("Cancelling: the script stops after its current step…")
            (run_dir / CANCEL_FILE).touch()

        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, cancel) if main else None
        told = False
        try:
            while True:
                result = training_run_execute(run_id=run.pk)
                assert result is not None
                run = result
                if run.status in TrainingRun.FINISHED:
                    return run
                if run.status == TrainingRun.Status.QUEUED and (run_dir / CANCEL_FILE).exists():
                    return training_run_cancel(run=run)
                if not told:
                    # Queued behind another run of the KB, or watched by a worker that took it.
                    self.stdout.write(f"Run {run.pk} is {run.status}; waiting…")
                    told = True
                time.sleep(max(0.05, float(settings.TRAIN_POLL_S)))
        finally:
            if main and signal.getsignal(signal.SIGINT) is cancel:
                signal.signal(signal.SIGINT, previous)
