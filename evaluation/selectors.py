"""Reads for evaluation pages, the API and the command."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from corpus.models import KnowledgeBase
from evaluation.models import EvalQuestion, EvalResult, EvalRun
from raftweb.eval.aggregate import METRICS, aggregate


def stale_after() -> timedelta:
    return timedelta(seconds=int(settings.EVAL_STALE_S))


def run_is_stale(run: EvalRun) -> bool:
    if run.status != EvalRun.Status.RUNNING:
        return False
    return run.heartbeat_at is None or run.heartbeat_at < timezone.now() - stale_after()


def eval_runs_stale() -> list[int]:
    """Running runs whose worker went silent (or handed the run back on shutdown)."""
    cutoff = timezone.now() - stale_after()
    return list(
        EvalRun.objects.filter(status=EvalRun.Status.RUNNING)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
        .values_list("pk", flat=True)
    )


def kb_eval_runs(kb: KnowledgeBase | None = None) -> QuerySet[EvalRun]:
    qs = EvalRun.objects.select_related("kb")
    return qs.filter(kb=kb) if kb is not None else qs


def run_config_summary(run: EvalRun) -> list[dict[str, Any]]:
    """``[{"config", "metrics", "counts"}]`` per configuration, from the results done so far
    (the stored summary of a finished run is the same computation at its end)."""
    records: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(run.configs))}
    done = EvalResult.objects.filter(run=run, state=EvalResult.State.DONE)
    for index, scores in done.values_list("config_index", "scores"):
        records.setdefault(index, []).append(scores or {})
    out = []
    for i, config in enumerate(run.configs):
        k = int(config.get("k") or run.k)
        metrics, counts = aggregate(
            records.get(i, []),
            k=k,
            judge_unavailable=run.judge_unavailable,
            gold_missing=run.gold_missing,
        )
        counts["questions"] = run.questions.count()
        out.append({"config": config.get("label", ""), "metrics": metrics, "counts": counts})
    return out


def run_summary(run: EvalRun) -> list[dict[str, Any]]:
    if run.status in EvalRun.FINISHED and run.summary:
        return run.summary
    return run_config_summary(run)


def run_report(run: EvalRun) -> dict[str, Any]:
    """The command's JSON contract: ``{"run", "questions", "configs": [...]}``."""
    return {
        "run": run.pk,
        "questions": run.questions.count(),
        "configs": [
            {"config": c["config"], "metrics": c["metrics"], "counts": c["counts"]}
            for c in run_summary(run)
        ],
    }


def metric_matrix(run: EvalRun) -> list[dict[str, Any]]:
    """Rows of the dashboard matrix: one per metric, a cell per configuration, the best marked
    (highest, or lowest for latency); ties are all marked; null cells are never best."""
    from raftweb.eval.aggregate import LOWER_IS_BETTER, SHARES

    summary = run_summary(run)
    rows = []
    for metric in METRICS:
        values = [c["metrics"].get(metric) for c in summary]
        present = [v for v in values if v is not None]
        best = None
        if len(present) > 1 and len(set(present)) > 1:
            best = min(present) if metric in LOWER_IS_BETTER else max(present)
        cells = []
        for i, c in enumerate(summary):
            count = c["counts"].get(metric, {})
            cells.append(
                {
                    "index": i,
                    "value": values[i],
                    "best": best is not None and values[i] == best,
                    "num": count.get("num"),
                    "den": count.get("den"),
                    "reason": count.get("reason", ""),
                }
            )
        rows.append({"metric": metric, "share": metric in SHARES, "cells": cells})
    return rows


# Which questions stand behind a cell: a predicate on a result's scores per metric.
_CELL_FILTERS: dict[str, str] = {
    "recall@k": "oracle_retrieved",
    "mrr": "oracle_retrieved",
    "parse_success": "parse_ok",
    "correct_reference": "correct_reference",
    "quote_faithfulness": "quotes_total",
    "exact_match": "exact_match",
    "f1": "f1",
    "rouge_l": "rouge_l",
    "judge_hard": "judge_hard",
    "judge_soft": "judge_soft",
    "refusal_accuracy": "refusal_correct",
    "mcq_accuracy": "mcq_correct",
    "latency_p50_ms": "latency_ms",
    "tokens_per_s": "completion_tokens",
}


def cell_results(run: EvalRun, *, config_index: int, metric: str) -> list[EvalResult]:
    """The done results of one configuration that count towards ``metric``, failures first."""
    key = _CELL_FILTERS.get(metric)
    results = list(
        EvalResult.objects.filter(run=run, config_index=config_index, state=EvalResult.State.DONE)
        .select_related("question")
        .order_by("question__ordinal")
    )
    if key is None:
        return results
    # Counts (quotes, tokens) apply when positive; every other score when present at all.
    positive = key in ("quotes_total", "completion_tokens")
    picked = [
        r
        for r in results
        if (r.scores or {}).get(key) is not None and (not positive or (r.scores or {})[key] > 0)
    ]
    return sorted(picked, key=lambda r: _passed(r.scores or {}, key))


def _passed(scores: dict[str, Any], key: str) -> float:
    value = scores.get(key)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value) if isinstance(value, int | float) else 0.0


def question_results(
    run: EvalRun, question: EvalQuestion
) -> list[tuple[dict[str, Any], EvalResult | None]]:
    """Every configuration's result for one question, in column order."""
    by_index = {r.config_index: r for r in EvalResult.objects.filter(run=run, question=question)}
    return [(c, by_index.get(i)) for i, c in enumerate(run.configs)]


def judge_distribution(run: EvalRun) -> list[dict[str, Any]]:
    return [
        {"config": c["config"], "scores": c["counts"].get("judge_scores", {})}
        for c in run_summary(run)
    ]
