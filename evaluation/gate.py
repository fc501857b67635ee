"""The promotion gate: a candidate version against the active one on the gate metrics.

Both sides are named explicitly (``gen=version:7`` against ``gen=version:5`` or ``gen=base``),
so a recorded run keeps meaning the same comparison after the active version changes. The gate
reads the newest finished run on the KB's eval split that holds both columns; asked to evaluate
(the ``train`` command), it runs that comparison itself when none is recorded."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from evaluation.models import EvalRun
from evaluation.runner import eval_run_execute
from evaluation.selectors import run_summary
from evaluation.services import EVAL_SPLIT, eval_run_start
from raftweb.errors import RaftwebError
from raftweb.eval.configs import EvalConfig
from training.activation import GateReport, register_promotion_gate
from training.models import ModelKind, ModelVersion
from training.selectors import active_version


@dataclass(frozen=True, slots=True)
class GatePair:
    active: EvalConfig
    candidate: EvalConfig


def gate_pair(version: ModelVersion) -> GatePair:
    current = active_version(kb=version.kb, kind=version.kind)
    if version.kind == ModelKind.GENERATOR:
        active_gen = f"version:{current.pk}" if current is not None else "base"
        return GatePair(
            EvalConfig(emb="active", gen=active_gen),
            EvalConfig(emb="active", gen=f"version:{version.pk}"),
        )
    active_emb = f"version:{current.pk}" if current is not None else "base"
    return GatePair(
        EvalConfig(emb=active_emb, gen="active"),
        EvalConfig(emb=f"version:{version.pk}", gen="active"),
    )


def recorded_run(version: ModelVersion, pair: GatePair) -> EvalRun | None:
    wanted = {pair.active.label, pair.candidate.label}
    for run in EvalRun.objects.filter(
        kb=version.kb, status=EvalRun.Status.SUCCEEDED, source=EVAL_SPLIT
    ).order_by("-finished_at", "-id")[:50]:
        if wanted <= set(run.labels):
            return run
    return None


def compare(run: EvalRun, pair: GatePair) -> GateReport:
    by_label = {c["config"]: c["metrics"] for c in run_summary(run)}
    old, new = by_label.get(pair.active.label, {}), by_label.get(pair.candidate.label, {})
    tolerance = float(settings.EVAL_GATE_TOLERANCE)
    deltas, regressions = [], []
    for metric in settings.EVAL_GATE_METRICS:
        a, c = old.get(metric), new.get(metric)
        delta = None if a is None or c is None else round(c - a, 4)
        # A metric the active version has and the candidate lost (no answer of it could be
        # scored) regresses too; one neither has (the judge down for both) does not.
        regressed = (delta is not None and delta < -tolerance) or (a is not None and c is None)
        if regressed:
            regressions.append(metric)
        deltas.append(
            {"metric": metric, "active": a, "candidate": c, "delta": delta, "regressed": regressed}
        )
    return GateReport(regressions=regressions, deltas=deltas, eval_run=run.pk)


def gate_evaluate(version: ModelVersion, pair: GatePair) -> EvalRun:
    """Run the comparison now, in this process, on the eval split."""
    run = eval_run_start(kb=version.kb, configs=[pair.active, pair.candidate], enqueue=False)
    return eval_run_execute(run_id=run.pk)


def promotion_gate(version: ModelVersion, evaluate: bool) -> GateReport | None:
    current = active_version(kb=version.kb, kind=version.kind)
    if current is not None and current.pk == version.pk:
        return GateReport(note=f"{version.label} is already active")
    pair = gate_pair(version)
    run = recorded_run(version, pair)
    if run is None and not evaluate:
        return GateReport(note="not evaluated against the active version yet")
    if run is None:
        try:
            run = gate_evaluate(version, pair)
        except RaftwebError as exc:
            return GateReport(note=f"could not evaluate: {exc.message}")
        if run.status != EvalRun.Status.SUCCEEDED:
            return GateReport(eval_run=run.pk, note=f"the evaluation {run.status}: {run.error}")
    return compare(run, pair)


def register() -> None:
    register_promotion_gate(promotion_gate)
