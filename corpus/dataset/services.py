"""Dataset services: review (approve, edit, reject, bulk), quote re-verification, agreement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from corpus.models import (
    KnowledgeBase,
    QAPair,
    ReviewEvent,
)
from raftweb.core.audit import audit
from raftweb.errors import RaftwebError
from raftweb.metrics import best_threshold, cohen_kappa, confusion
from raftweb.raft.answer import format_answer, parse_answer
from raftweb.raft.evidence import check_row_quotes, quote_threshold_of

REVIEW_FIELDS = (
    "question",
    "cot_answer",
    "final_answer",
    "status",
    "split",
    "quote_status",
    "auto_reject_reason",
)


class QAError(RaftwebError):
    """A user-facing failure of a generation or dataset service."""


class ConflictError(QAError):
    """A concurrent edit: the pair changed since the reviewer opened it."""

    default_code, default_status = "conflict", 409

    def __init__(
        self,
        message: str = "This pair was changed by someone else since you opened it; "
        "reload to see their change. Nothing was overwritten.",
    ) -> None:
        super().__init__(message)


def _snapshot(pair: QAPair) -> dict[str, Any]:
    return {f: getattr(pair, f) for f in REVIEW_FIELDS} | {"judge_score": pair.judge_score}


def _record(pair: QAPair, user: Any, action: str, before: dict[str, Any], note: str = "") -> None:
    ReviewEvent.objects.create(
        pair=pair,
        user=user if getattr(user, "pk", None) else None,
        action=action,
        before=before,
        after=_snapshot(pair),
        note=note[:300],
    )


def reverify_quotes(pair: QAPair) -> None:
    """Recompute the answer's parts and quote checks after an edit, by the same rule and with
    the same threshold that generation used for this pair (the job's ``quote_threshold``), so
    an edit that leaves the quotes alone never flips the pair's quote status."""
    verdict = check_row_quotes(
        cot_answer=pair.cot_answer,
        refusal=pair.refusal,
        oracle_id=pair.oracle_chunk_id,
        oracle_text=pair.oracle_text,
        context_ids=pair.context_chunk_ids or [],
        context_texts=pair.context_texts or [],
        threshold=quote_threshold_of(pair.job.config if pair.job_id else None),
    )
    pair.quote_checks = verdict.check_dicts()
    pair.quote_status = verdict.status
    pair.parsed_ok = verdict.parsed.parsed_ok
    if verdict.parsed.final:
        pair.final_answer = verdict.parsed.final


def qa_pair_update(
    *,
    pair_id: int,
    user: Any,
    version: int,
    action: str,
    question: str | None = None,
    cot_answer: str | None = None,
    final_answer: str | None = None,
    split: str | None = None,
    note: str = "",
) -> QAPair:
    """Approve, reject or edit one pair under an optimistic lock on ``version``.

    Raises :class:`ConflictError` when someone else changed it first (nothing is written).
    """
    if action not in ("approve", "reject", "edit", "reset"):
        raise QAError(f"unknown action {action!r}")
    with transaction.atomic():
        pair = QAPair.objects.select_for_update().get(pk=pair_id)
        if pair.version != version:
            raise ConflictError()
        before = _snapshot(pair)
        if action == "edit" or any(v is not None for v in (question, cot_answer, final_answer)):
            if question is not None:
                if not question.strip():
                    raise QAError("the question cannot be empty")
                pair.question = question.strip()
            if cot_answer is not None:
                pair.cot_answer = cot_answer.strip()
            if final_answer is not None and final_answer.strip():
                parsed = parse_answer(pair.cot_answer)
                if parsed.final != final_answer.strip():
                    pair.cot_answer = format_answer(parsed.reasoning, final_answer.strip())
            reverify_quotes(pair)
        if split is not None:
            if split not in ("train", "eval"):
                raise QAError("split must be train or eval")
            pair.split = split
        if action == "approve":
            pair.status = QAPair.Status.APPROVED
        elif action == "reject":
            pair.status = QAPair.Status.REJECTED
        elif action == "reset":
            pair.status = QAPair.Status.PENDING
        pair.version = version + 1
        pair.reviewed_by = user if getattr(user, "pk", None) else None
        pair.reviewed_at = timezone.now()
        # The conditional update is the lock that also holds on databases without row locks.
        changed = QAPair.objects.filter(pk=pair.pk, version=version).update(
            question=pair.question,
            cot_answer=pair.cot_answer,
            final_answer=pair.final_answer,
            quote_checks=pair.quote_checks,
            quote_status=pair.quote_status,
            parsed_ok=pair.parsed_ok,
            split=pair.split,
            status=pair.status,
            version=pair.version,
            reviewed_by=pair.reviewed_by,
            reviewed_at=pair.reviewed_at,
            updated_at=timezone.now(),
        )
        if not changed:
            raise ConflictError()
        _record(pair, user, action, before, note)
    return pair


@dataclass(frozen=True)
class PairFilter:
    status: str = ""
    min_score: int | None = None
    max_score: int | None = None
    unscored: bool = False
    quote_status: str = ""
    document_id: int | None = None
    split: str = ""
    source: str = ""
    job_id: int | None = None
    q: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PairFilter:
        def num(name: str) -> int | None:
            raw = str(params.get(name) or "").strip()
            return int(raw) if raw.lstrip("-").isdigit() else None

        def choice(name: str, options: Sequence[str]) -> str:
            raw = str(params.get(name) or "").strip()
            return raw if raw in options else ""

        return cls(
            status=choice("status", ("pending", "approved", "rejected")),
            min_score=num("min_score"),
            max_score=num("max_score"),
            unscored=str(params.get("unscored") or "") in ("1", "true", "on"),
            quote_status=choice("quote", ("verified", "unverified", "none")),
            document_id=num("document"),
            split=choice("split", ("train", "eval")),
            source=choice("source", ("generated", "imported", "chat_feedback")),
            job_id=num("job"),
            q=str(params.get("q") or "").strip()[:200],
        )

    def apply(self, qs: QuerySet[QAPair]) -> QuerySet[QAPair]:
        if self.status:
            qs = qs.filter(status=self.status)
        if self.min_score is not None:
            qs = qs.filter(judge_score__gte=self.min_score)
        if self.max_score is not None:
            qs = qs.filter(judge_score__lte=self.max_score)
        if self.unscored:
            qs = qs.filter(judge_score__isnull=True)
        if self.quote_status:
            qs = qs.filter(quote_status=self.quote_status)
        if self.document_id is not None:
            qs = qs.filter(document_id=self.document_id)
        if self.split:
            qs = qs.filter(split=self.split)
        if self.source:
            qs = qs.filter(source=self.source)
        if self.job_id is not None:
            qs = qs.filter(job_id=self.job_id)
        if self.q:
            qs = qs.filter(Q(question__icontains=self.q) | Q(final_answer__icontains=self.q))
        return qs


def qa_pairs_bulk(*, kb: KnowledgeBase, user: Any, filters: PairFilter, action: str) -> int:
    """Approve / reject / reset every pair matching ``filters``; each change is recorded."""
    target = {
        "approve": QAPair.Status.APPROVED,
        "reject": QAPair.Status.REJECTED,
        "reset": QAPair.Status.PENDING,
    }.get(action)
    if target is None:
        raise QAError(f"unknown bulk action {action!r}")
    count = 0
    qs = filters.apply(QAPair.objects.filter(kb=kb)).exclude(status=target)
    for pk in list(qs.values_list("pk", flat=True)):
        with transaction.atomic():
            pair = QAPair.objects.select_for_update().get(pk=pk)
            if pair.status == target:
                continue
            before = _snapshot(pair)
            pair.status = target
            pair.version += 1
            pair.reviewed_by = user if getattr(user, "pk", None) else None
            pair.reviewed_at = timezone.now()
            pair.save(
                update_fields=["status", "version", "reviewed_by", "reviewed_at", "updated_at"]
            )
            _record(pair, user, f"bulk_{action}", before)
            count += 1
    audit(user, "review.bulk", kb, bulk_action=action, pairs=count)
    return count


def qa_agreement(*, kb: KnowledgeBase, threshold: int = 3) -> dict[str, Any]:
    """Judge vs humans on pairs a person decided (approved/rejected by a reviewer) and the
    judge scored: confusion matrix, Cohen's kappa, score histograms, best threshold."""

    decided = list(
        QAPair.objects.filter(
            kb=kb,
            reviewed_by__isnull=False,
            judge_score__isnull=False,
            status__in=[QAPair.Status.APPROVED, QAPair.Status.REJECTED],
        ).values_list("judge_score", "status")
    )
    scores = [s for s, _ in decided]
    human = [st == QAPair.Status.APPROVED for _, st in decided]
    judge = [s >= threshold for s in scores]
    histogram = {label: [0] * 5 for label in ("approved", "rejected")}
    for score, approved in zip(scores, human, strict=True):
        histogram["approved" if approved else "rejected"][score - 1] += 1
    best = best_threshold(scores, human)
    return {
        "n": len(decided),
        "threshold": threshold,
        # rows: human approve/reject; columns: judge approve/reject
        "confusion": confusion(human, judge, [True, False]),
        "kappa": cohen_kappa(human, judge),
        "agreement": (sum(a == b for a, b in zip(human, judge, strict=True)) / len(human))
        if human
        else None,
        "histogram": histogram,
        "best_threshold": best.threshold if best else None,
        "best_agreement": best.agreement if best else None,
        "best_kappa": best.kappa if best else None,
    }
