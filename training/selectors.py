"""Reads for the training pages, the API, chat and evaluation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from corpus.models import EmbeddingIndex, KnowledgeBase, QAPair
from training.models import ActiveModel, ModelKind, ModelVersion, TrainingMetric, TrainingRun

LOG_TAIL_CHARS = 4000


def kb_runs(kb: KnowledgeBase | None = None) -> QuerySet[TrainingRun]:
    qs = TrainingRun.objects.select_related("kb", "created_by", "model_version")
    return qs.filter(kb=kb) if kb is not None else qs


def kb_versions(kb: KnowledgeBase) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(kb=kb).select_related("run", "kb")


def run_version_id(run: TrainingRun) -> int | None:
    """The id of the version a run produced (None while it has none)."""
    try:
        return run.model_version.pk
    except ModelVersion.DoesNotExist:
        return None


def active_version(*, kb: KnowledgeBase, kind: str) -> ModelVersion | None:
    """The KB's active tuned model of ``kind`` ("generator" or "embedding"); None: the base.

    An embedding version counts only while the KB still searches with its index: the corpus
    pages can switch a KB's embedding version (back to base, say) without going through here.
    """
    row = ActiveModel.objects.select_related("version").filter(kb=kb, kind=kind).first()
    if row is None:
        return None
    version = row.version
    if kind == ModelKind.EMBEDDING and version.embedding_version != kb.embedding_version:
        return None
    return version


def active_versions(kb: KnowledgeBase) -> dict[str, ModelVersion | None]:
    return {kind: active_version(kb=kb, kind=kind) for kind in ModelKind.values}


def stale_cutoff() -> Any:
    return timezone.now() - timedelta(seconds=settings.TRAIN_STALE_S)


def run_is_stale(run: TrainingRun) -> bool:
    """Running, but its worker has not reported for a while (killed, or handed it back)."""
    if run.status != TrainingRun.Status.RUNNING:
        return False
    return run.heartbeat_at is None or run.heartbeat_at < stale_cutoff()


def stale_q() -> Q:
    return Q(status=TrainingRun.Status.RUNNING) & (
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale_cutoff())
    )


def training_runs_stale() -> list[int]:
    """Runs left 'running' by a worker that stopped reporting."""
    return list(TrainingRun.objects.filter(stale_q()).values_list("pk", flat=True))


def training_runs_waiting() -> list[int]:
    """The oldest queued run of each KB that has no run in progress: what a worker may start
    now (runs of one KB are trained one after the other)."""
    running = TrainingRun.objects.filter(kb_id=OuterRef("kb_id"), status=TrainingRun.Status.RUNNING)
    first: dict[int, int] = {}
    for pk, kb_id in (
        TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED)
        .filter(~Exists(running))
        .order_by("created_at", "id")
        .values_list("pk", "kb_id")
    ):
        first.setdefault(kb_id, pk)
    return list(first.values())


def next_queued_run(*, kb_id: int) -> int | None:
    return (
        TrainingRun.objects.filter(kb_id=kb_id, status=TrainingRun.Status.QUEUED)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
        .first()
    )


def run_metrics(
    run: TrainingRun, *, event: str | None = None, limit: int | None = None
) -> list[TrainingMetric]:
    """Metric rows in file order; the ``limit`` most recent when given."""
    qs = TrainingMetric.objects.filter(run=run)
    if event:
        qs = qs.filter(event=event)
    if limit:
        return list(reversed(qs.order_by("-line")[:limit]))
    return list(qs.order_by("line"))


def run_metric_series(run: TrainingRun) -> dict[str, Any]:
    """Loss curves for the chart: one point per step (a step redone after a resume keeps its
    latest value)."""
    series: dict[str, dict[int, dict[str, Any]]] = {"step": {}, "eval": {}}
    for row in TrainingMetric.objects.filter(
        run=run, event__in=series, step__isnull=False
    ).order_by("line"):
        series[row.event][row.step] = row.values  # type: ignore[index]
    train = [
        {
            "step": step,
            "loss": v.get("loss"),
            "learning_rate": v.get("learning_rate"),
            "grad_norm": v.get("grad_norm"),
            "tokens_per_s": v.get("tokens_per_s"),
            "epoch": v.get("epoch"),
        }
        for step, v in sorted(series["step"].items())
    ]
    evals = [
        {"step": step, "eval_loss": v.get("eval_loss"), **_numbers(v)}
        for step, v in sorted(series["eval"].items())
    ]
    return {
        "run": run.pk,
        "status": run.status,
        "step": run.step,
        "total_steps": run.total_steps,
        "train": train,
        "eval": evals,
    }


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {
        k: v
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "ts")
    }


def run_log_tail(run: TrainingRun, *, chars: int = LOG_TAIL_CHARS) -> str:
    """The end of the run's log.txt (untrusted text: templates escape it)."""
    if not run.run_dir:
        return ""
    path = Path(run.run_dir) / "log.txt"
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - chars * 4))
            data = fh.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")[-chars:]


def version_index_status(version: ModelVersion) -> str:
    """For an embedding version: the state of its index (ready, building, failed, missing)."""
    if version.kind != ModelKind.EMBEDDING:
        return ""
    if not version.embedding_version:
        return "missing"
    status = (
        EmbeddingIndex.objects.filter(kb_id=version.kb_id, version=version.embedding_version)
        .values_list("status", flat=True)
        .first()
    )
    return status or "missing"


def kb_training_rows(kb: KnowledgeBase) -> dict[str, int]:
    """What a new run would train on: approved pairs per split, and those from chat feedback."""
    approved = QAPair.objects.filter(kb=kb, status=QAPair.Status.APPROVED)
    return {
        "train": approved.filter(split="train").count(),
        "eval": approved.filter(split="eval").count(),
        "from_feedback": approved.filter(split="train", source=QAPair.Source.CHAT_FEEDBACK).count(),
    }


def eval_retrieval_questions(kb: KnowledgeBase) -> list[dict[str, Any]]:
    """The eval split's approved questions with their gold document, in the shape
    :func:`corpus.knowledge.search.kb_retrieval_evaluate` takes (refusals have no gold)."""
    return [
        {"question": question, "gold": [name]}
        for question, name in QAPair.objects.filter(
            kb=kb,
            split="eval",
            status=QAPair.Status.APPROVED,
            refusal=False,
            document__isnull=False,
        )
        .order_by("id")
        .values_list("question", "document__name")
    ]
