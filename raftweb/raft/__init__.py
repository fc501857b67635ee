"""THE RAFT format: prompts, answer parsing, quote verification, context assembly, judging,
row layouts (export/import) and splits.

Engine package: never imports Django. Everything that reads or writes a RAFT row — generation,
training, evaluation, chat — goes through these modules so the format is defined once.
"""

from __future__ import annotations

from raftweb.raft.answer import (
    ParsedAnswer,
    QuoteSegment,
    answer_segments,
    parse_answer,
    split_quotes,
)
from raftweb.raft.evidence import RowQuoteVerdict, check_row_quotes, row_evidence
from raftweb.raft.prompts import PromptSet, build_instruction, build_messages
from raftweb.raft.quotes import QuoteCheck, verify_quotes

__all__ = [
    "ParsedAnswer",
    "PromptSet",
    "QuoteCheck",
    "QuoteSegment",
    "RowQuoteVerdict",
    "answer_segments",
    "build_instruction",
    "build_messages",
    "check_row_quotes",
    "parse_answer",
    "row_evidence",
    "split_quotes",
    "verify_quotes",
]
