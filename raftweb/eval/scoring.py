"""Scoring one answer to one question (engine: no Django).

The answer arrives already parsed and cited by :mod:`raftweb.answering` (the code chat uses):
its final answer, its outcome and its checked citations. Nothing here re-parses RAFT syntax
except through :func:`raftweb.raft.answer.parse_answer`, the one parser.

A field that does not apply to a question is ``None`` (a refusal row has no reference answer
to match, a question with no gold document in the knowledge base has no recall), so the
aggregation never counts it as a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from raftweb.eval.mcq import chosen_index
from raftweb.metrics import exact_match, rouge_l, token_f1
from raftweb.raft.answer import is_refusal, parse_answer


@dataclass(frozen=True, slots=True)
class QuestionSpec:
    """What is known about a question: its reference answer, its gold documents (ids in the
    KB; ``None`` when it names none or none of them is in the KB), whether its expected answer
    is a refusal (no oracle), and for multiple choice its options and correct index."""

    question: str
    gold_answer: str = ""
    gold_doc_ids: frozenset[int] | None = None
    refusal: bool = False
    options: tuple[str, ...] = ()
    correct: int | None = None
    oracle_chunk: str | None = None  # the oracle chunk's id, when known (KB pairs, exports)

    @property
    def is_mcq(self) -> bool:
        return bool(self.options) and self.correct is not None


@dataclass(frozen=True, slots=True)
class CitedQuote:
    verified: bool
    document_id: int | None


@dataclass(slots=True)
class QuestionScore:
    retrieved: bool = False
    gold_rank: int | None = None  # 1-based rank of the first gold document among those retrieved
    oracle_retrieved: bool | None = None  # the gold document among the retrieved chunks
    oracle_chunk_retrieved: bool | None = None  # the oracle chunk itself
    parse_ok: bool | None = None
    refused: bool | None = None
    correct_reference: bool | None = None
    quotes_total: int = 0
    quotes_verified: int = 0
    exact_match: float | None = None
    f1: float | None = None
    rouge_l: float | None = None
    refusal_correct: bool | None = None
    mcq_correct: bool | None = None
    mcq_choice: int | None = None
    judge_score: int | None = None
    judge_hard: bool | None = None
    judge_soft: bool | None = None
    judge_reason: str = ""
    judge_error: str = ""
    latency_ms: float | None = None
    generation_s: float | None = None
    completion_tokens: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def document_rank(hit_doc_ids: Sequence[int], gold: frozenset[int]) -> int | None:
    """1-based rank of the first gold document among the distinct retrieved documents."""
    seen: list[int] = []
    for doc_id in hit_doc_ids:
        if doc_id not in seen:
            seen.append(doc_id)
            if doc_id in gold:
                return len(seen)
    return None


def score_retrieval(
    spec: QuestionSpec,
    hit_doc_ids: Sequence[int],
    score: QuestionScore,
    hit_chunk_ids: Sequence[str] = (),
) -> None:
    score.retrieved = True
    if spec.gold_doc_ids:
        score.gold_rank = document_rank(hit_doc_ids, spec.gold_doc_ids)
        score.oracle_retrieved = score.gold_rank is not None
    if spec.oracle_chunk and not spec.refusal:
        score.oracle_chunk_retrieved = spec.oracle_chunk in {str(c) for c in hit_chunk_ids}


def score_answer(
    spec: QuestionSpec,
    *,
    raw: str,
    final: str,
    citations: Sequence[CitedQuote],
    score: QuestionScore,
) -> None:
    """Fill the answer fields of ``score`` from a finished answer (status ok)."""
    parsed = parse_answer(raw)
    score.parse_ok = parsed.parsed_ok
    # A refusal is read from the final answer when there is one, else from the whole text
    # (an unparsed "I don't know" still refuses).
    score.refused = parsed.refusal if parsed.parsed_ok else is_refusal(raw.strip())
    score.quotes_total = len(citations)
    score.quotes_verified = sum(1 for c in citations if c.verified)
    answer = final if parsed.parsed_ok else raw.strip()
    if spec.refusal:
        score.refusal_correct = bool(score.refused)
        return
    if spec.gold_doc_ids:
        score.correct_reference = any(
            c.verified and c.document_id in spec.gold_doc_ids for c in citations
        )
    if spec.is_mcq:
        score.mcq_choice = chosen_index(answer, spec.options)
        score.mcq_correct = score.mcq_choice == spec.correct
        return
    if spec.gold_answer.strip():
        score.exact_match = exact_match(answer, spec.gold_answer)
        score.f1 = token_f1(answer, spec.gold_answer)
        score.rouge_l = rouge_l(answer, spec.gold_answer)


def needs_judge(spec: QuestionSpec, score: QuestionScore) -> bool:
    """The judge grades answered, non-refusal, open questions that have a reference answer."""
    return (
        score.parse_ok is not None
        and not score.error
        and not spec.refusal
        and not spec.is_mcq
        and bool(spec.gold_answer.strip())
    )
