"""HTML for the review workspace: answers with their quotes marked, documents with the quoted
spans highlighted. Untrusted text (documents, model output) is ESCAPED first; only then are
our own ``<mark>`` tags wrapped around the escaped pieces."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from raftweb.raft.prompts import BEGIN_QUOTE, END_QUOTE

_QUOTE_SPLIT = re.compile(
    re.escape(BEGIN_QUOTE) + r"(.*?)(?:" + re.escape(END_QUOTE) + r"|$)", re.DOTALL
)


def render_answer(cot_answer: str, checks: Sequence[Mapping[str, Any]]) -> SafeString:
    """The answer with each quote marked verified (``quote-ok``) or not (``quote-bad``)."""
    verified = [bool(c.get("verified")) for c in checks]
    out: list[str] = []
    pos = 0
    index = 0
    for m in _QUOTE_SPLIT.finditer(cot_answer or ""):
        out.append(escape(cot_answer[pos : m.start()]))
        quote = m.group(1)
        if quote.strip():
            ok = verified[index] if index < len(verified) else False
            index += 1
            label = "verified quote" if ok else "quote not found in the document"
            out.append(
                f'<mark class="quote {"quote-ok" if ok else "quote-bad"}" title="{label}">'
                f'{escape(quote)}<span class="quote-flag" aria-label="{label}">'
                f"{'✓' if ok else '✗'}</span></mark>"
            )
        pos = m.end()
    out.append(escape((cot_answer or "")[pos:]))
    return mark_safe("".join(out))  # noqa: S308 - every piece above is escaped


def merge_spans(spans: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    clean = sorted((max(0, a), min(length, b)) for a, b in spans if b > a and a < length)
    merged: list[tuple[int, int]] = []
    for a, b in clean:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def render_highlighted(text: str, spans: Iterable[tuple[int, int]]) -> SafeString:
    """``text`` escaped, with ``<mark>`` around each (merged) span of original offsets."""
    text = text or ""
    out: list[str] = []
    pos = 0
    for a, b in merge_spans(spans, len(text)):
        out.append(escape(text[pos:a]))
        out.append(f'<mark class="quoted">{escape(text[a:b])}</mark>')
        pos = b
    out.append(escape(text[pos:]))
    return mark_safe("".join(out))  # noqa: S308 - every piece above is escaped


def spans_for(checks: Sequence[Mapping[str, Any]], doc_key: str) -> list[tuple[int, int]]:
    return [
        (int(c["start"]), int(c["end"]))
        for c in checks
        if c.get("verified")
        and str(c.get("doc_key")) == doc_key
        and c.get("start") is not None
        and c.get("end") is not None
    ]
