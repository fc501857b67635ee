"""Evaluation services: import question sets, start, cancel and resume runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from corpus.models import Chunk, Document, KnowledgeBase, QAPair
from evaluation.models import EvalQuestion, EvalResult, EvalRun, QuestionSet
from evaluation.resolve import resolve_config
from evaluation.selectors import run_is_stale
from evaluation.tasks import eval_run_task
from raftweb.core.audit import audit
from raftweb.errors import Conflict, Invalid
from raftweb.eval.configs import DEFAULT_K, DEFAULT_MODE, MAX_K, MODES, EvalConfig
from raftweb.eval.gold import DocName, gold_index, match_gold
from raftweb.eval.questions import EvalItem, ParsedSet, parse_question_lines

MAX_QUESTIONS = 20_000
EVAL_SPLIT = "eval split"


# ------------------------------------------------------------------------------ question sets


def question_set_import(
    *, kb: KnowledgeBase, name: str, text: str, source: str = "", replace: bool = False
) -> tuple[QuestionSet, ParsedSet]:
    """Store the parsed lines of ``text`` as the KB's question set ``name``. Lines that cannot
    be read are returned with their numbers; a file with no usable line is refused."""
    name = (name or "").strip()[:200]
    if not name:
        raise Invalid("A question set needs a name.")
    parsed = parse_question_lines(text)
    if not parsed.items:
        first = "; ".join(f"line {n}: {msg}" for n, msg in parsed.errors[:3])
        raise Invalid(f"No usable question in the file{': ' + first if first else ''}.")
    if len(parsed.items) > MAX_QUESTIONS:
        raise Invalid(f"At most {MAX_QUESTIONS} questions per set.")
    items = [i.as_dict() for i in parsed.items]
    existing = QuestionSet.objects.filter(kb=kb, name=name).first()
    if existing is not None and not replace:
        raise Conflict(f"Knowledge base {kb.slug!r} already has a question set {name!r}.")
    with transaction.atomic():
        qset, _ = QuestionSet.objects.update_or_create(
            kb=kb, name=name, defaults={"items": items, "source": source[:500]}
        )
    audit(None, "evaluation.import", qset, kb=kb, questions=len(items))
    return qset, parsed


# ------------------------------------------------------------------------------ runs


def _kb_doc_index(kb: KnowledgeBase) -> dict[str, set[int]]:
    docs = Document.objects.filter(kb=kb).values_list("id", "name", "original_filename")
    return gold_index(DocName(i, n, o or "") for i, n, o in docs)


def eval_split_items(kb: KnowledgeBase) -> list[dict[str, Any]]:
    """The KB's approved eval-split pairs as question dicts (gold: the pair's document)."""
    rows = (
        QAPair.objects.filter(kb=kb, split="eval", status=QAPair.Status.APPROVED)
        .select_related("document")
        .order_by("id")
    )
    return [
        {
            "question": p.question,
            "gold_answer": p.final_answer,
            "gold_names": [p.document.name] if p.document_id else [],
            "gold_doc_ids": [p.document_id] if p.document_id and not p.refusal else [],
            "gold_missing": [],
            "refusal": p.refusal,
            "qa_pair_id": p.pk,
            "oracle_chunk_id": str(p.oracle_chunk_id) if p.oracle_chunk_id else "",
        }
        for p in rows
    ]


def imported_items(kb: KnowledgeBase, items: Sequence[EvalItem]) -> list[dict[str, Any]]:
    """Imported questions with their gold names matched against the KB's documents (stored
    and original file names). A RAFTweb export's oracle chunk id names its document directly
    when the chunk belongs to this KB."""
    index = _kb_doc_index(kb)
    chunk_ids = [int(i.oracle_chunk_id) for i in items if i.oracle_chunk_id.isdigit()]
    chunk_docs = dict(
        Chunk.objects.filter(pk__in=chunk_ids, document__kb=kb).values_list("pk", "document_id")
    )
    out = []
    for item in items:
        found = match_gold(item.gold, index)
        doc_ids = set(found.doc_ids)
        if item.oracle_chunk_id.isdigit() and int(item.oracle_chunk_id) in chunk_docs:
            doc_ids.add(chunk_docs[int(item.oracle_chunk_id)])
        out.append(
            {
                "question": item.question,
                "gold_answer": item.answer,
                "gold_names": item.gold,
                "gold_doc_ids": [] if item.refusal else sorted(doc_ids),
                "gold_missing": list(found.unmatched),
                "refusal": item.refusal,
                "options": item.options,
                "correct": item.correct,
                "oracle_chunk_id": item.oracle_chunk_id
                if item.oracle_chunk_id.isdigit() and int(item.oracle_chunk_id) in chunk_docs
                else "",
            }
        )
    return out


def eval_run_start(
    *,
    kb: KnowledgeBase,
    configs: Sequence[EvalConfig],
    mode: str = DEFAULT_MODE,
    k: int = DEFAULT_K,
    question_set: QuestionSet | None = None,
    items: Sequence[EvalItem] | None = None,
    source: str = "",
    limit: int | None = None,
    user: Any = None,
    enqueue: bool = True,
) -> EvalRun:
    """Create a run with one pending result per question and configuration.

    Every configuration is resolved first (a missing version, an unknown profile or an index
    that is not ready raises before anything is created), and an empty question set is
    refused. ``items`` (a file read by the caller) wins over ``question_set``; with neither,
    the KB's approved eval split is used."""
    if mode not in MODES:
        raise Invalid(f"Unknown retrieval mode {mode!r}; use {', '.join(MODES)}.")
    if not 1 <= int(k) <= MAX_K:
        raise Invalid(f"k must be between 1 and {MAX_K}.")
    if not configs:
        raise Invalid("Give at least one configuration.")
    for config in configs:
        resolve_config(kb, config)
    if items is not None:
        questions, source = imported_items(kb, items), source or "file"
    elif question_set is not None:
        if question_set.kb_id != kb.pk:
            raise Invalid("That question set belongs to another knowledge base.")
        loaded = [EvalItem.from_dict(d) for d in question_set.items]
        questions, source = imported_items(kb, loaded), f"set {question_set.name}"
    else:
        questions, source = eval_split_items(kb), EVAL_SPLIT
    if limit is not None:
        if limit < 1:
            raise Invalid("--limit must be at least 1.")
        questions = questions[:limit]
    if not questions:
        where = (
            "the knowledge base has no approved eval-split pairs (approve some, or import a "
            "question set with eval_import)"
            if source == EVAL_SPLIT
            else f"{source} has no questions"
        )
        raise Invalid(f"The question set is empty: {where}.", code="no_questions")
    missing = sorted({n for q in questions for n in q.get("gold_missing", [])})
    with transaction.atomic():
        run = EvalRun.objects.create(
            kb=kb,
            question_set=question_set if items is None else None,
            source=source[:300],
            configs=[{**c.as_dict(), "label": c.label} for c in configs],
            mode=mode,
            k=int(k),
            total_units=len(questions) * len(configs),
            gold_missing=missing,
            created_by=user if getattr(user, "pk", None) else None,
        )
        rows = EvalQuestion.objects.bulk_create(
            [
                EvalQuestion(
                    run=run,
                    ordinal=n,
                    question=q["question"],
                    gold_answer=q.get("gold_answer", ""),
                    gold_names=q.get("gold_names", []),
                    gold_doc_ids=q.get("gold_doc_ids", []),
                    gold_missing=q.get("gold_missing", []),
                    refusal=bool(q.get("refusal")),
                    options=q.get("options") or [],
                    correct=q.get("correct"),
                    qa_pair_id=q.get("qa_pair_id"),
                    oracle_chunk_id=q.get("oracle_chunk_id", ""),
                )
                for n, q in enumerate(questions)
            ]
        )
        if any(r.pk is None for r in rows):  # backends that do not return ids on bulk insert
            rows = list(run.questions.order_by("ordinal"))
        EvalResult.objects.bulk_create(
            [
                EvalResult(run=run, question=row, config_index=i)
                for i in range(len(configs))
                for row in rows
            ]
        )
    audit(user, "evaluation.start", ("evaluation run", run.pk, f"run {run.pk}"), kb=kb)
    if enqueue:
        transaction.on_commit(lambda: eval_run_task(run.pk))
    return run


def eval_run_cancel(*, run: EvalRun, user: Any = None) -> EvalRun:
    """A queued run ends at once; a running one stops after its current question."""
    if not run.is_active:
        raise Conflict(f"evaluation run {run.pk} is already {run.status}", code="not_active")
    EvalRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    EvalRun.objects.filter(pk=run.pk, status=EvalRun.Status.QUEUED).update(
        status=EvalRun.Status.CANCELLED, finished_at=timezone.now()
    )
    audit(user, "evaluation.cancel", ("evaluation run", run.pk, f"run {run.pk}"), kb=run.kb)
    run.refresh_from_db()
    return run


def eval_run_resume(*, run: EvalRun, user: Any = None, enqueue: bool = True) -> EvalRun:
    """Queue a failed or cancelled run again: only its pending results are answered."""
    if run.status == EvalRun.Status.SUCCEEDED:
        raise Conflict(f"evaluation run {run.pk} already succeeded", code="succeeded")
    if run.status == EvalRun.Status.RUNNING and not run_is_stale(run):
        raise Conflict(f"evaluation run {run.pk} is still running", code="running")
    EvalRun.objects.filter(pk=run.pk).update(
        status=EvalRun.Status.QUEUED, cancel_requested=False, finished_at=None, error=""
    )
    audit(user, "evaluation.resume", ("evaluation run", run.pk, f"run {run.pk}"), kb=run.kb)
    if enqueue:
        transaction.on_commit(lambda: eval_run_task(run.pk))
    run.refresh_from_db()
    return run
