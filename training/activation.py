"""Making a model version the one its KB uses: shared by the request side
(:func:`training.services.model_version_activate`) and the worker (an embedding version
activated once its index is built, :func:`training.runner.embedding_version_activate_run`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from corpus.knowledge.services import kb_embedding_activate
from raftweb.errors import Conflict, RaftwebError
from training.lora_serving import (
    adapter_name,
    is_lora,
    lora_load,
    lora_unload,
    runtime_lora_server,
)
from training.models import ActiveModel, ModelKind, ModelVersion

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ promotion gate
@dataclass(frozen=True, slots=True)
class GateReport:
    """A candidate version measured against the active one on the gate metrics.

    ``deltas``: ``[{"metric", "active", "candidate", "delta", "regressed"}]``; ``regressions``
    names the metrics that dropped; ``note`` says why nothing could be compared (no
    evaluation, an empty eval split) - an unmeasured version is not a regressing one."""

    regressions: list[str] = field(default_factory=list)
    deltas: list[dict[str, Any]] = field(default_factory=list)
    eval_run: int | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "regressions": list(self.regressions),
            "deltas": list(self.deltas),
            "eval_run": self.eval_run,
            "note": self.note,
        }


# (version, evaluate) -> report or None. Apps above training (evaluation) register here, so
# training never imports them. ``evaluate=False``: judge from evaluations already recorded
# (request paths); True: run the comparison now if none is recorded (the worker, commands).
PromotionGate = Callable[[ModelVersion, bool], GateReport | None]
_gates: list[PromotionGate] = []


class PromotionRefused(Conflict):
    default_code = "regression"


def register_promotion_gate(gate: PromotionGate) -> PromotionGate:
    if gate not in _gates:
        _gates.append(gate)
    return gate


def promotion_gate(version: ModelVersion, *, evaluate: bool = False) -> GateReport | None:
    """The first report a registered gate gives (None when no gate is registered)."""
    for gate in _gates:
        report = gate(version, evaluate)
        if report is not None:
            return report
    return None


def promotion_check(version: ModelVersion, *, evaluate: bool = False) -> GateReport | None:
    """Raise :class:`PromotionRefused` (with the report in its details) when ``version``
    regresses against the active one; else return the report."""
    report = promotion_gate(version, evaluate=evaluate)
    if report is not None and report.regressions:
        worse = ", ".join(
            f"{d['metric']} {d['active']} -> {d['candidate']}"
            for d in report.deltas
            if d["regressed"]
        )
        raise PromotionRefused(
            f"{version.label} regresses against the active {version.kind} on {worse} "
            f"(evaluation run {report.eval_run}); confirm (or --force) to activate it anyway.",
            details={"gate": report.as_dict()},
        )
    return report


def active_model_set(
    *, version: ModelVersion, user: Any = None, force: bool = False
) -> ModelVersion:
    """Record ``version`` as its KB's active one of its kind. An embedding version also becomes
    the KB's search index (the base collection stays, for comparison); that raises the corpus
    error when the version's index is not ready.

    With runtime LoRA on a vLLM student server (:mod:`training.lora_serving`), a generator
    adapter is loaded into the server first: if the server refuses or cannot be reached, the
    error is raised and the previous version stays active. The adapter it replaces is unloaded
    afterwards; a failed unload is only logged (the new adapter already serves).

    Unless ``force``, a version that a recorded evaluation shows regressing against the active
    one is refused (:func:`promotion_check`)."""
    if not force:
        promotion_check(version)
    server = runtime_lora_server() if version.kind == ModelKind.GENERATOR else None
    previous: ModelVersion | None = None
    if server is not None:
        row = (
            ActiveModel.objects.select_related("version", "version__kb")
            .filter(kb=version.kb, kind=version.kind)
            .first()
        )
        previous = row.version if row is not None else None
        if is_lora(version):
            lora_load(spec=server, name=adapter_name(version), path=version.path)
    try:
        with transaction.atomic():
            if version.kind == ModelKind.EMBEDDING:
                kb_embedding_activate(kb=version.kb, version=version.embedding_version)
            ActiveModel.objects.update_or_create(
                kb=version.kb,
                kind=version.kind,
                defaults={
                    "version": version,
                    "activated_by": user if getattr(user, "pk", None) else None,
                    "activated_at": timezone.now(),
                },
            )
    except BaseException:
        if server is not None and is_lora(version) and previous != version:
            _unload_quietly(server, adapter_name(version))
        raise
    if server is not None and is_lora(previous) and previous != version:
        assert previous is not None
        _unload_quietly(server, adapter_name(previous))
    return version


def _unload_quietly(server: Any, name: str) -> None:
    try:
        lora_unload(spec=server, name=name)
    except RaftwebError as exc:
        log.warning("could not unload LoRA adapter %s: %s", name, exc.message)
