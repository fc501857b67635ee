"""Deterministic quote verification.

A quote counts as found when, after normalising case, whitespace and typographic punctuation,
it matches a span of a document with a fuzzy ratio ≥ ``threshold``. Positions are reported in
the ORIGINAL document text so a UI can highlight the exact span.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u00a0": " ",
    }
)
_ELLIPSIS_RE = re.compile(r"\s*(?:\.\.\.|…)\s*")
_EDGE_JUNK = " \t\r\n\"'`“”‘’"
MIN_PIECE_CHARS = 8
# The fuzzy ratio a quote needs to count as found: a job's ``quote_threshold`` (within the
# bounds), or this default wherever no job sets one (chat citations, imports).
DEFAULT_QUOTE_THRESHOLD = 0.9
QUOTE_THRESHOLD_BOUNDS = (0.5, 1.0)


@dataclass(frozen=True, slots=True)
class QuoteCheck:
    quote: str
    verified: bool
    doc_key: str | None
    start: int | None
    end: int | None
    score: float

    def as_dict(self) -> dict[str, object]:
        return {
            "quote": self.quote,
            "verified": self.verified,
            "doc_key": self.doc_key,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
        }


@dataclass(frozen=True, slots=True)
class _Normalised:
    text: str
    # index in the original text of every character of ``text``
    origin: list[int]


_WORD_RE = re.compile(r"\S+")


@functools.lru_cache(maxsize=2048)
def normalise(text: str) -> _Normalised:
    """Case-folded, whitespace-collapsed text and, for each of its characters, the index of
    the original character (cached: the same oracle is checked for every row of a chunk)."""
    translated = text.translate(_TRANSLATE)
    if translated.isascii():
        # Fast path (most documents): lower() keeps lengths, so offsets map 1:1 per word.
        lowered = translated.lower()
        parts: list[str] = []
        origin: list[int] = []
        for m in _WORD_RE.finditer(lowered):
            if parts:
                parts.append(" ")
                origin.append(m.start() - 1)
            parts.append(m.group())
            origin.extend(range(m.start(), m.end()))
        return _Normalised("".join(parts), origin)
    chars: list[str] = []
    origin = []
    prev_space = True  # drops leading whitespace
    for i, ch in enumerate(translated):
        ch = unicodedata.normalize("NFKC", ch).translate(_TRANSLATE)
        if not ch:
            continue
        if ch.isspace():
            if not prev_space:
                chars.append(" ")
                origin.append(i)
            prev_space = True
            continue
        prev_space = False
        for c in ch.casefold():
            chars.append(c)
            origin.append(i)
    while chars and chars[-1] == " ":
        chars.pop()
        origin.pop()
    return _Normalised("".join(chars), origin)


def verify_quotes(
    quotes: Sequence[str],
    documents: Mapping[str, str],
    *,
    threshold: float = DEFAULT_QUOTE_THRESHOLD,
) -> list[QuoteCheck]:
    """Check each quote against every document; the best-scoring document wins."""
    normed = {key: normalise(text) for key, text in documents.items()}
    return [_check_one(q, documents, normed, threshold) for q in quotes]


def quoted_doc_keys(checks: Sequence[QuoteCheck]) -> list[str]:
    """Documents really quoted, in first-quoted order."""
    seen: list[str] = []
    for c in checks:
        if c.verified and c.doc_key is not None and c.doc_key not in seen:
            seen.append(c.doc_key)
    return seen


def quoted_spans(
    checks: Iterable[QuoteCheck | Mapping[str, Any]], doc_key: str
) -> list[tuple[int, int]]:
    """The spans (original offsets) of ``doc_key`` that verified quotes were found at; takes
    :class:`QuoteCheck` objects or their stored ``as_dict()`` form."""
    spans: list[tuple[int, int]] = []
    for c in checks:
        data = c.as_dict() if isinstance(c, QuoteCheck) else c
        start, end = data.get("start"), data.get("end")
        if data.get("verified") and str(data.get("doc_key")) == doc_key:
            if start is not None and end is not None:
                spans.append((int(start), int(end)))  # type: ignore[call-overload]
    return spans


def merge_spans(spans: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Spans clamped to ``[0, length]``, empty ones dropped, sorted, overlapping or touching
    ones merged: what a highlighter wraps in ``<mark>``."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted((max(0, a), min(length, b)) for a, b in spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _check_one(
    quote: str,
    documents: Mapping[str, str],
    normed: Mapping[str, _Normalised],
    threshold: float,
) -> QuoteCheck:
    cleaned = (quote or "").strip(_EDGE_JUNK)
    # A quote elided with "..." is verified piece by piece, all in the same document.
    pieces = [p.strip(_EDGE_JUNK) for p in _ELLIPSIS_RE.split(cleaned)]
    pieces = [p for p in pieces if p]
    if len(pieces) > 1:
        pieces = [p for p in pieces if len(p) >= MIN_PIECE_CHARS] or pieces[:1]
    if not pieces or not normalise(" ".join(pieces)).text:
        return QuoteCheck(quote, False, None, None, None, 0.0)
    best = QuoteCheck(quote, False, None, None, None, 0.0)
    for key, norm in normed.items():
        spans = [_match(normalise(p).text, norm) for p in pieces]
        score = min(s for s, _, _ in spans)
        if score > best.score:
            start = min(a for _, a, _ in spans)
            end = max(b for _, _, b in spans)
            best = QuoteCheck(quote, score >= threshold, key, start, end, score)
            if score >= 1.0:
                break
    return best


def _match(needle: str, hay: _Normalised) -> tuple[float, int | None, int | None]:
    """Best fuzzy match of ``needle`` in ``hay``: (score 0..1, original start, original end)."""
    text = hay.text
    if not needle or not text:
        return 0.0, None, None
    pos = text.find(needle)
    if pos >= 0:
        return 1.0, hay.origin[pos], hay.origin[pos + len(needle) - 1] + 1
    if len(needle) > len(text):
        # A quote longer than the document cannot be a span of it; partial ratio would
        # otherwise score the document inside the quote as a perfect match.
        score = fuzz.ratio(needle, text) / 100.0
        return score, hay.origin[0], hay.origin[-1] + 1
    al = fuzz.partial_ratio_alignment(needle, text)
    if al is None:
        return 0.0, None, None
    start, end = al.dest_start, al.dest_end
    if end <= start:
        return 0.0, None, None
    return al.score / 100.0, hay.origin[start], hay.origin[end - 1] + 1
