"""Per-configuration metrics from per-question scores.

Every metric is a share or a mean over the questions it applies to; a metric that applies to
none (no refusal rows, the judge down, no gold document in the KB) is ``None`` with the reason
in the counts, never 0. The counts also hold the numerator and denominator behind each share,
so a reader sees "3 / 4", not only 75 %.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from raftweb.metrics import mean

METRICS: tuple[str, ...] = (
    "recall@k",
    "mrr",
    "parse_success",
    "correct_reference",
    "quote_faithfulness",
    "exact_match",
    "f1",
    "rouge_l",
    "judge_hard",
    "judge_soft",
    "refusal_accuracy",
    "mcq_accuracy",
    "latency_p50_ms",
    "tokens_per_s",
)
# Metrics where lower is better (the dashboard marks the lowest as best).
LOWER_IS_BETTER = frozenset({"latency_p50_ms"})
# Shares (shown as percentages) as opposed to means of scores or measured quantities.
SHARES = frozenset(
    {
        "recall@k",
        "parse_success",
        "correct_reference",
        "quote_faithfulness",
        "judge_hard",
        "judge_soft",
        "refusal_accuracy",
        "mcq_accuracy",
    }
)

REASONS = {
    "recall@k": "no question has a gold document in this knowledge base",
    "mrr": "no question has a gold document in this knowledge base",
    "parse_success": "no answer was generated",
    "correct_reference": "no answered question has a gold document in this knowledge base",
    "quote_faithfulness": "no answer quoted the context",
    "exact_match": "no answered question has a reference answer",
    "f1": "no answered question has a reference answer",
    "rouge_l": "no answered question has a reference answer",
    "judge_hard": "no answer was judged",
    "judge_soft": "no answer was judged",
    "refusal_accuracy": "no question without an oracle (refusal rows) was answered",
    "mcq_accuracy": "no multiple-choice question was answered",
    "latency_p50_ms": "no answer was generated",
    "tokens_per_s": "no generated tokens were counted",
}


def _share(values: Sequence[bool]) -> tuple[float | None, dict[str, Any]]:
    if not values:
        return None, {"num": 0, "den": 0}
    num = sum(1 for v in values if v)
    return num / len(values), {"num": num, "den": len(values)}


def _mean(values: Sequence[float]) -> tuple[float | None, dict[str, Any]]:
    if not values:
        return None, {"den": 0}
    return mean(values), {"sum": round(sum(values), 6), "den": len(values)}


def _present(records: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return [r[key] for r in records if r.get(key) is not None]


def aggregate(
    records: Sequence[Mapping[str, Any]],
    *,
    k: int,
    judge_unavailable: str = "",
    gold_missing: Sequence[str] = (),
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """``(metrics, counts)`` of one configuration from its questions' score dicts
    (:meth:`raftweb.eval.scoring.QuestionScore.as_dict`)."""
    answered = [r for r in records if r.get("parse_ok") is not None and not r.get("error")]
    retrieval = [r for r in records if r.get("oracle_retrieved") is not None]
    values: dict[str, float | None] = {}
    counts: dict[str, Any] = {
        "questions": len(records),
        "answered": len(answered),
        "errors": sum(1 for r in records if r.get("error")),
        "gold_missing": sorted(set(gold_missing)),
    }

    ranks = [r.get("gold_rank") for r in retrieval]
    values["recall@k"], counts["recall@k"] = _share([rk is not None and rk <= k for rk in ranks])
    values["mrr"], counts["mrr"] = _mean([1.0 / rk if rk else 0.0 for rk in ranks])
    values["parse_success"], counts["parse_success"] = _share([r["parse_ok"] for r in answered])
    values["correct_reference"], counts["correct_reference"] = _share(
        _present(answered, "correct_reference")
    )
    quoted = [r for r in answered if r.get("quotes_total")]
    if quoted:
        num = sum(int(r["quotes_verified"]) for r in quoted)
        den = sum(int(r["quotes_total"]) for r in quoted)
        values["quote_faithfulness"] = num / den
        counts["quote_faithfulness"] = {"num": num, "den": den, "answers": len(quoted)}
    else:
        values["quote_faithfulness"], counts["quote_faithfulness"] = None, {"num": 0, "den": 0}
    for key in ("exact_match", "f1", "rouge_l"):
        values[key], counts[key] = _mean(_present(answered, key))
    for key in ("judge_hard", "judge_soft"):
        values[key], counts[key] = _share(_present(answered, key))
    values["refusal_accuracy"], counts["refusal_accuracy"] = _share(
        _present(answered, "refusal_correct")
    )
    values["mcq_accuracy"], counts["mcq_accuracy"] = _share(_present(answered, "mcq_correct"))
    latencies = _present(answered, "latency_ms")
    values["latency_p50_ms"] = statistics.median(latencies) if latencies else None
    counts["latency_p50_ms"] = {"den": len(latencies)}
    tokens = sum(int(r.get("completion_tokens") or 0) for r in answered)
    seconds = sum(float(r.get("generation_s") or 0.0) for r in answered)
    values["tokens_per_s"] = tokens / seconds if tokens and seconds > 0 else None
    counts["tokens_per_s"] = {"tokens": tokens, "seconds": round(seconds, 3)}

    for key in METRICS:
        if values[key] is None:
            reason = REASONS[key]
            if key.startswith("judge_") and judge_unavailable:
                reason = f"judge unavailable: {judge_unavailable}"
            counts[key]["reason"] = reason
        else:
            values[key] = round(float(values[key]), 4)
    # Beside the contract's metrics: how often the oracle chunk itself (not only its document)
    # was retrieved, over the questions whose oracle chunk is known.
    _, counts["oracle_chunk_retrieved"] = _share(_present(records, "oracle_chunk_retrieved"))
    judged = [r for r in answered if r.get("judge_error")]
    if judged:
        counts["judge_failed"] = len(judged)
    counts["judge_scores"] = {
        str(s): sum(1 for r in answered if r.get("judge_score") == s) for s in range(1, 6)
    }
    counts["recall_curve"] = recall_curve(ranks, k)
    return values, counts


def recall_curve(ranks: Sequence[int | None], k: int) -> list[float | None]:
    """recall@1 … recall@k from the gold documents' ranks (``None`` entries when no ranks)."""
    if not ranks:
        return [None] * k
    return [
        round(sum(1 for r in ranks if r is not None and r <= j) / len(ranks), 4)
        for j in range(1, k + 1)
    ]
