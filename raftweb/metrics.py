"""Evaluation and agreement metrics (engine: no Django).

Retrieval: recall@k (hit rate: any gold item in the top k) and MRR over ranked ids.
Answers: SQuAD-style exact match and token F1, ROUGE-L (LCS F-measure, by ``rouge-score``).
Agreement: Cohen's kappa and confusion matrix (scikit-learn), and the judge-score threshold
that best reproduces human approve/reject decisions.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

# ------------------------------------------------------------------ retrieval


def recall_at_k(ranked: Sequence[Hashable], gold: Collection[Hashable], k: int) -> float:
    """1.0 when any gold item is among the first ``k`` ranked ids, else 0.0."""
    if not gold or k <= 0:
        return 0.0
    gold_set = set(gold)
    return 1.0 if any(r in gold_set for r in list(ranked)[:k]) else 0.0


def mrr(ranked: Sequence[Hashable], gold: Collection[Hashable]) -> float:
    """Reciprocal rank of the first gold item (0.0 when none is ranked)."""
    gold_set = set(gold)
    for i, r in enumerate(ranked, start=1):
        if r in gold_set:
            return 1.0 / i
    return 0.0


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ------------------------------------------------------------------ answers

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = (text or "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


@functools.cache
def _rouge_l_scorer():  # -> rouge_score.rouge_scorer.RougeScorer
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F-measure (LCS) by Google's ``rouge-score``, the implementation papers report:
    lower-cased alphanumeric tokens, no stemming."""
    if not (prediction or "").strip() or not (gold or "").strip():
        return 0.0
    return float(_rouge_l_scorer().score(gold, prediction)["rougeL"].fmeasure)


# ------------------------------------------------------------------ agreement


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa between two raters; ``None`` when undefined (no items, or both raters
    used one single identical label so chance agreement is 1)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    if not a:
        return None
    if len(set(a) | set(b)) < 2:
        return None
    value = float(cohen_kappa_score(list(a), list(b)))
    return None if value != value else value


def confusion(
    actual: Sequence[Hashable], predicted: Sequence[Hashable], labels: Sequence[Hashable]
) -> list[list[int]]:
    """Confusion matrix as nested lists: rows = actual label, columns = predicted label."""
    from sklearn.metrics import confusion_matrix

    if not actual:
        return [[0] * len(labels) for _ in labels]
    return confusion_matrix(list(actual), list(predicted), labels=list(labels)).tolist()


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: int
    agreement: float
    kappa: float | None


def best_threshold(
    scores: Sequence[int], approved: Sequence[bool], *, candidates: Sequence[int] = (1, 2, 3, 4, 5)
) -> ThresholdChoice | None:
    """The threshold t ("approve when score ≥ t") that best matches the human decisions:
    highest agreement, ties broken by kappa then by the lower threshold."""
    if len(scores) != len(approved):
        raise ValueError("scores and decisions must have the same length")
    if not scores:
        return None
    best: ThresholdChoice | None = None
    for t in candidates:
        predicted = [s >= t for s in scores]
        agreement = sum(p == h for p, h in zip(predicted, approved, strict=True)) / len(scores)
        kappa = cohen_kappa(list(approved), predicted)
        choice = ThresholdChoice(t, agreement, kappa)
        if best is None or (agreement, kappa if kappa is not None else -2.0) > (
            best.agreement,
            best.kappa if best.kappa is not None else -2.0,
        ):
            best = choice
    return best
