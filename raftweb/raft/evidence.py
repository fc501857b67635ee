"""Which documents a row's quotes must come from, and the row's quote verdict.

Used by generation (:mod:`raftweb.raft.pipeline`) and by every later re-check of a stored row
(a reviewer's edit, an import, a chat answer sent to review), so a row keeps its quote status
unless its answer or its evidence changes. The rule:

- an answering row quotes its oracle, even when the row's context omits it (RAFT's p < 1 rows);
- a refusal row — and a row with no oracle text (an imported pair, a chat answer that cited
  nothing) — quotes the context it was shown.

Engine module: no Django. Callers pass a row's stored fields, not a model instance.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from raftweb.raft.answer import ParsedAnswer, parse_answer
from raftweb.raft.quotes import (
    DEFAULT_QUOTE_THRESHOLD,
    QUOTE_THRESHOLD_BOUNDS,
    QuoteCheck,
    verify_quotes,
)

QuoteStatus = Literal["none", "verified", "unverified"]
ORACLE_KEY = "oracle"


def context_key(chunk_id: Hashable | None, position: int) -> str:
    """The evidence key (a quote check's ``doc_key``) of the context document at ``position``:
    its chunk id, or ``ctx<position>`` when it has none (imported context)."""
    return f"ctx{position}" if chunk_id is None or chunk_id == "" else str(chunk_id)


def oracle_key(oracle_id: Hashable | None) -> str:
    """The evidence key of a row's oracle: its chunk id, or ``"oracle"`` when it has none."""
    return ORACLE_KEY if oracle_id is None or oracle_id == "" else str(oracle_id)


def row_evidence(
    *,
    refusal: bool,
    oracle_id: Hashable | None,
    oracle_text: str,
    context_ids: Sequence[Hashable | None],
    context_texts: Sequence[str],
) -> dict[str, str]:
    """The documents a row's quotes are checked against, keyed as its quote checks' ``doc_key``.

    ``context_ids`` and ``context_texts`` are parallel; a text without an id (or past the end
    of the ids) is keyed by position, so no context document is ever left out.
    """
    if refusal or not oracle_text:
        ids = list(context_ids)
        return {
            context_key(ids[n] if n < len(ids) else None, n): text
            for n, text in enumerate(context_texts)
        }
    return {oracle_key(oracle_id): oracle_text}


def quote_status(checks: Sequence[QuoteCheck]) -> QuoteStatus:
    """``"none"`` without quotes, ``"verified"`` when every quote was found, else ``"unverified"``."""
    if not checks:
        return "none"
    return "verified" if all(c.verified for c in checks) else "unverified"


@dataclass(frozen=True, slots=True)
class RowQuoteVerdict:
    """A row's parsed answer, the documents its quotes were checked against, and the result."""

    parsed: ParsedAnswer
    evidence: dict[str, str]
    checks: list[QuoteCheck]
    status: QuoteStatus

    def check_dicts(self) -> list[dict[str, object]]:
        """The checks as stored on a row (``quote_checks``), in quote order."""
        return [c.as_dict() for c in self.checks]


def check_row_quotes(
    *,
    cot_answer: str,
    refusal: bool,
    oracle_id: Hashable | None,
    oracle_text: str,
    context_ids: Sequence[Hashable | None],
    context_texts: Sequence[str],
    threshold: float = DEFAULT_QUOTE_THRESHOLD,
) -> RowQuoteVerdict:
    """Parse a row's answer and verify its quotes against the row's evidence at ``threshold``
    (pass the job's ``quote_threshold``; see :func:`quote_threshold_of`)."""
    parsed = parse_answer(cot_answer)
    evidence = row_evidence(
        refusal=refusal,
        oracle_id=oracle_id,
        oracle_text=oracle_text,
        context_ids=context_ids,
        context_texts=context_texts,
    )
    checks = verify_quotes(parsed.quotes, evidence, threshold=threshold) if evidence else []
    return RowQuoteVerdict(parsed, evidence, checks, quote_status(checks))


def quote_threshold_of(config: Mapping[str, Any] | None) -> float:
    """The quote threshold a job stored in its config (clamped to the accepted bounds), or the
    default for a row without a job or a config without a usable value."""
    raw = (config or {}).get("quote_threshold")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_QUOTE_THRESHOLD
    if value != value:  # NaN
        return DEFAULT_QUOTE_THRESHOLD
    low, high = QUOTE_THRESHOLD_BOUNDS
    return min(high, max(low, value))
