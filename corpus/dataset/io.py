"""Dataset import and export, and the approved rows that training reads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from corpus.dataset.services import QAError, _record, reverify_quotes
from corpus.generation.prompts import kb_prompts
from corpus.knowledge.splits import kb_document_splits
from corpus.models import (
    Chunk,
    Document,
    KnowledgeBase,
    QAPair,
)
from raftweb.core.audit import audit
from raftweb.raft.formats import (
    COMPLETION_STOP,
    EXPORTERS,
    ImportedRecord,
    RaftRow,
    export_lines,
    parse_import,
)
from raftweb.raft.matching import best_chunk
from raftweb.raft.splits import row_split


def pair_to_row(pair: QAPair) -> RaftRow:
    """A stored pair as the engine's :class:`RaftRow` (what every exporter takes)."""
    origin = pair.origin or {}
    return RaftRow(
        id=origin.get("id") or f"{pair.kb.slug if hasattr(pair, 'kb') else 'kb'}-{pair.pk}",
        question=pair.question,
        cot_answer=pair.cot_answer,
        final_answer=pair.final_answer,
        context_ids=[str(c) for c in pair.context_chunk_ids],
        context_texts=list(pair.context_texts),
        context_titles=list(pair.context_titles),
        oracle_index=pair.oracle_index,
        split=pair.split,
        type=origin.get("type") or "general",
        oracle_text=origin.get("oracle_context") or pair.oracle_text,
        oracle_id=str(pair.oracle_chunk_id) if pair.oracle_chunk_id else None,
        refusal=pair.refusal,
    )


def qa_export_queryset(
    *, kb: KnowledgeBase, split: str = "train", status: str = "approved"
) -> QuerySet[QAPair]:
    if split not in ("train", "eval", "all"):
        raise QAError("split must be train, eval or all")
    if status not in ("approved", "all"):
        raise QAError("status must be approved or all")
    qs = QAPair.objects.filter(kb=kb).select_related("kb").order_by("id")
    if split != "all":
        qs = qs.filter(split=split)
    if status == "approved":
        qs = qs.filter(status=QAPair.Status.APPROVED)
    return qs


def qa_rows(
    *, kb: KnowledgeBase, split: str = "train", status: str = "approved"
) -> Iterator[RaftRow]:
    """The dataset as RaftRows, for training and evaluation. ``split="train"`` (the default)
    never yields an eval-split pair."""
    for pair in qa_export_queryset(kb=kb, split=split, status=status).iterator(chunk_size=500):
        yield pair_to_row(pair)


def qa_export_lines(
    *,
    kb: KnowledgeBase,
    fmt: str,
    split: str = "train",
    status: str = "approved",
    system: str | None = None,
    stop: str = COMPLETION_STOP,
) -> tuple[int, Iterator[str]]:
    """(row count, JSONL lines). Raises QAError(code="empty") when nothing matches, so callers
    never write an empty file."""

    if fmt not in EXPORTERS:
        raise QAError(f"unknown format {fmt!r}; choose one of {', '.join(sorted(EXPORTERS))}")
    qs = qa_export_queryset(kb=kb, split=split, status=status)
    count = qs.count()
    if not count:
        what = "approved " if status == "approved" else ""
        where = "" if split == "all" else f" in the {split} split"
        raise QAError(
            f"Nothing to export: knowledge base '{kb.slug}' has no {what}Q&A pairs{where}.",
            code="empty",
            status=404,
        )
    rows = (pair_to_row(p) for p in qs.iterator(chunk_size=500))
    audit(None, "dataset.export", kb, format=fmt, split=split, status=status, rows=count)
    return count, export_lines(rows, fmt, system=system, prompts=kb_prompts(kb), stop=stop)


def _doc_matches(kb: KnowledgeBase, names: Sequence[str]) -> list[int]:
    wanted = {n.strip().lower() for n in names if n.strip()}
    out = []
    for pk, name in Document.objects.filter(kb=kb).values_list("pk", "name"):
        low = name.lower()
        stem = low.rsplit(".", 1)[0] if "." in low else low
        if low in wanted or stem in wanted:
            out.append(pk)
    return out


def _origin(rec: ImportedRecord) -> dict[str, str]:
    """What the row brought that is exported back as it came."""
    fields = {"id": rec.id, "type": rec.type, "oracle_context": rec.oracle_text}
    return {k: v for k, v in fields.items() if v}


def _keep_context(pair: QAPair, rec: ImportedRecord, chunk: Chunk) -> None:
    """Keep the imported context (RAFT hf/chat/completion rows) as it came, titles included,
    with the oracle's position: where the row's oracle text or quotes are, else where our
    chunk's text is. The oracle slot points at our chunk; the others are not ours."""
    texts = list(rec.context_texts)
    idx = rec.oracle_index
    if idx is None:
        idx = next((i for i, t in enumerate(texts) if t.strip() == chunk.text.strip()), None)
    pair.context_texts = texts
    pair.context_chunk_ids = [chunk.pk if i == idx else None for i in range(len(texts))]
    pair.context_titles = list(rec.context_titles) or ["" for _ in texts]
    pair.oracle_index = idx


def qa_import(
    *,
    kb: KnowledgeBase,
    data: bytes | str,
    filename: str = "",
    user: Any = None,
    status: str = "pending",
    split: str | None = None,
) -> dict[str, Any]:
    """Import pairs; returns ``{"imported": n, "duplicates": d, "skipped": [{"line": k,
    "error": ...}]}``. Idempotent: a pair the knowledge base already has (same question and
    final answer, whitespace aside), or that an earlier line of the file has, is counted in
    ``duplicates`` and not imported again.

    The oracle chunk comes from the gold documents (the chunk that best matches the question
    and answer, or that the quotes were taken from) or, without gold, from the quotes / the
    given oracle text across the whole KB. Bad lines are skipped with their line numbers.
    """
    if status not in ("pending", "approved"):
        raise QAError("status must be pending or approved")
    if split not in (None, "train", "eval"):
        raise QAError("split must be train or eval")
    parsed = parse_import(data, filename=filename)
    with transaction.atomic():
        # One import per knowledge base at a time: two imports of one file add it once.
        KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
        result = _import_records(
            kb=kb, records=parsed.records, filename=filename, user=user, status=status, split=split
        )
    result["skipped"] = sorted(
        [e.as_dict() for e in parsed.errors] + result["skipped"], key=lambda e: e["line"]
    )
    audit(
        user,
        "dataset.import",
        kb,
        file=filename,
        imported=result["imported"],
        duplicates=result["duplicates"],
        skipped=len(result["skipped"]),
    )
    return result


def pair_key(question: str, answer: str) -> tuple[str, str]:
    """What makes two pairs of a knowledge base the same pair: the question and the final
    answer, whitespace aside."""
    return " ".join(question.split()), " ".join(answer.split())


def _existing_keys(kb: KnowledgeBase, questions: Iterable[str]) -> set[tuple[str, str]]:
    """The keys of the KB's pairs that ask one of ``questions``. Compared after normalising
    whitespace on both sides, so the KB's pairs are read (two short columns) rather than
    looked up by exact text."""
    wanted = {" ".join(q.split()) for q in questions}
    keys: set[tuple[str, str]] = set()
    rows = QAPair.objects.filter(kb=kb).values_list("question", "final_answer", "cot_answer")
    for question, final, cot in rows.iterator(chunk_size=2000):
        key = pair_key(question, final or cot)
        if key[0] in wanted:
            keys.add(key)
    return keys


def _import_records(
    *,
    kb: KnowledgeBase,
    records: Sequence[ImportedRecord],
    filename: str,
    user: Any,
    status: str,
    split: str | None,
) -> dict[str, Any]:
    skipped: list[dict[str, Any]] = []
    doc_splits = kb_document_splits(kb=kb) if split is None else {}
    imported = duplicates = 0
    seen = _existing_keys(kb, (rec.question for rec in records))
    all_chunks: dict[int, str] | None = None
    for rec in records:
        # The same question and answer twice is one pair: importing a file again adds nothing.
        key = pair_key(rec.question, rec.final_answer or rec.cot_answer)
        if key in seen:
            duplicates += 1
            continue
        candidates: dict[int, str]
        if rec.gold:
            doc_ids = _doc_matches(kb, rec.gold)
            if not doc_ids:
                skipped.append(
                    {"line": rec.line, "error": f"gold document not found: {', '.join(rec.gold)}"}
                )
                continue
            candidates = dict(
                Chunk.objects.filter(document_id__in=doc_ids).values_list("pk", "text")
            )
        else:
            if all_chunks is None:
                all_chunks = dict(Chunk.objects.filter(document__kb=kb).values_list("pk", "text"))
            candidates = all_chunks
        oracle_id = (
            best_chunk(
                question=rec.question,
                answer=rec.final_answer,
                quotes=rec.quotes,
                candidates=candidates,
                oracle_text=rec.oracle_text,
            )
            if candidates
            else None
        )
        if oracle_id is None and (rec.gold or rec.quotes or rec.oracle_text):
            skipped.append(
                {"line": rec.line, "error": "no chunk of the knowledge base matches this pair"}
            )
            continue
        chunk = (
            Chunk.objects.select_related("document").filter(pk=oracle_id).first()
            if oracle_id
            else None
        )
        pair = QAPair(
            kb=kb,
            question=rec.question,
            cot_answer=rec.cot_answer,
            final_answer=rec.final_answer,
            oracle_chunk=chunk,
            document=chunk.document if chunk else None,
            oracle_text=chunk.text if chunk else rec.oracle_text,
            context_chunk_ids=[chunk.pk] if chunk else [],
            context_texts=[chunk.text] if chunk else [],
            context_titles=[chunk.title or chunk.document.name] if chunk else [],
            oracle_index=0 if chunk else None,
            split=split or row_split([chunk.document_id] if chunk else [], doc_splits),
            status=status,
            source=QAPair.Source.IMPORTED,
            reviewed_by=user if (status == "approved" and getattr(user, "pk", None)) else None,
            notes=[f"imported from {filename or 'upload'} line {rec.line} ({rec.source_format})"],
            origin=_origin(rec),
        )
        if rec.context_texts and chunk is not None:
            _keep_context(pair, rec, chunk)
        reverify_quotes(pair)
        pair.final_answer = rec.final_answer
        try:
            with transaction.atomic():
                pair.save()
                _record(pair, user, "import", {})
        except IntegrityError as exc:
            skipped.append({"line": rec.line, "error": f"could not save: {exc}"})
            continue
        seen.add(key)
        imported += 1
    return {"imported": imported, "duplicates": duplicates, "skipped": skipped}
