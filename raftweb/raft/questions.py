"""Parsing the teacher's question lists (JSON arrays, numbered lists, bullets, prose) and
dropping near-duplicates."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from rapidfuzz import fuzz

_PREFIX_RE = re.compile(
    r"^\s*(?:"
    r"(?:q(?:uestion)?\s*\d*\s*[:.)-])"  # Q1: / Question 2. / Q:
    r"|(?:\(?\d{1,3}\s*[.):-]\)?)"  # 1. / 2) / (3)
    r"|(?:[-*•·–]+)"  # bullets
    r")\s*",
    re.IGNORECASE,
)
_WRAP = " \t\"'`“”‘’*_"
# A teacher that declines ("I'm sorry, I can't help with that?") writes lines that are not
# questions about the document, however they end.
_APOLOGY_RE = re.compile(
    r"^(?:i\s*(?:'|’)?\s*m\s+sorry|i\s+am\s+sorry|sorry\b|i\s+apologi[sz]e|"
    r"i\s+(?:can\s*(?:'|’)?\s*t|cannot|am\s+unable|(?:'|’)m\s+unable|won\s*(?:'|’)?\s*t)\b|"
    r"as\s+an\s+ai\b|unfortunately,?\s+i\b)",
    re.IGNORECASE,
)
MIN_CHARS = 8
MAX_CHARS = 400
DUPLICATE_THRESHOLD = 90.0


def parse_questions(text: str | None, *, limit: int | None = None) -> list[str]:
    """Questions from a teacher reply, cleaned and de-duplicated, in order."""
    text = text if isinstance(text, str) else ""
    if is_apology(text):
        return []  # "I'm sorry, I can't.\nCan I help with anything else?" asks nothing
    found = _from_json(text)
    if found is None:
        found = _from_lines(text)
    cleaned = [q for q in (_clean(q) for q in found) if _plausible(q) and not is_apology(q)]
    unique = dedupe_questions(cleaned)
    return unique[:limit] if limit is not None else unique


def is_apology(text: str) -> bool:
    """Whether ``text`` is the model declining or apologising rather than asking."""
    return bool(_APOLOGY_RE.match(text.strip().lstrip(_WRAP)))


def dedupe_questions(
    questions: Iterable[str], *, threshold: float = DUPLICATE_THRESHOLD
) -> list[str]:
    """Drop questions whose normalised token-sorted ratio to an earlier one is ≥ threshold."""
    kept: list[str] = []
    keys: list[str] = []
    for q in questions:
        key = _key(q)
        if any(fuzz.token_sort_ratio(key, k) >= threshold for k in keys):
            continue
        kept.append(q)
        keys.append(key)
    return kept


def _from_json(text: str) -> list[str] | None:
    start, end = text.find("["), text.rfind("]")
    candidates = []
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    ostart, oend = text.find("{"), text.rfind("}")
    if 0 <= ostart < oend:
        candidates.append(text[ostart : oend + 1])
    for raw in candidates:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict):
            data = data.get("questions") or data.get("Questions")
        if not isinstance(data, list):
            continue
        out: list[str] = []
        for item in data:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict):
                q = item.get("question") or item.get("q")
                if isinstance(q, str):
                    out.append(q)
        if out:
            return out
    return None


def _from_lines(text: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) <= 1 and text.count("?") > 1:
        # Several questions run together on one line.
        lines = [p.strip() + "?" for p in text.split("?") if p.strip()]
    stripped = [_PREFIX_RE.sub("", ln, count=1) for ln in lines]
    with_q = [ln for ln in stripped if ln.rstrip(_WRAP).endswith("?")]
    # When most lines are questions, the rest are preambles ("Here are 5 questions:").
    if with_q and len(with_q) * 2 >= len(stripped):
        return with_q
    return [ln for ln in stripped if not ln.rstrip().endswith(":")]


def _clean(q: str) -> str:
    q = _PREFIX_RE.sub("", q.strip(), count=1)
    return re.sub(r"\s+", " ", q.strip(_WRAP)).strip()


def _plausible(q: str) -> bool:
    letters = sum(c.isalpha() for c in q)
    return MIN_CHARS <= len(q) <= MAX_CHARS and letters >= len(q) * 0.5 and len(q.split()) >= 2


def _key(q: str) -> str:
    return re.sub(r"[^\w\s]", "", q.casefold())
