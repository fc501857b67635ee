"""HTML for the review workspace: answers with their quotes marked, documents with the quoted
spans highlighted. Untrusted text (documents, model output) is ESCAPED first; only then are
our own ``<mark>`` tags wrapped around the escaped pieces.

Quotes are found by the RAFT module's one splitter (:func:`raftweb.raft.answer.answer_segments`),
which numbers them exactly as the parser that produced the quote checks did, so quote *i* on
the page is always shown with check *i*."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from raftweb.raft.answer import answer_segments, parse_answer
from raftweb.raft.quotes import merge_spans


def _quote_mark(quote: str, check: Mapping[str, Any] | None) -> str:
    if check is None:
        # A quote after the final answer tag was never checked: say so, neither ✓ nor ✗.
        label, css, flag = "quote not checked", "quote-unchecked", "?"
    elif check.get("verified"):
        label, css, flag = "verified quote", "quote-ok", "✓"
    else:
        label, css, flag = "quote not found in the document", "quote-bad", "✗"
    return (
        f'<mark class="quote {css}" title="{label}">{escape(quote)}'
        f'<span class="quote-flag" aria-label="{label}">{flag}</span></mark>'
    )


def render_answer(cot_answer: str, checks: Sequence[Mapping[str, Any]]) -> SafeString:
    """The answer with each quote marked verified (``quote-ok``) or not (``quote-bad``)."""
    out: list[str] = []
    for seg in answer_segments(cot_answer or ""):
        if seg.kind == "text":
            out.append(escape(seg.text))
        elif seg.is_quote:
            out.append(_quote_mark(seg.quote, seg.paired(checks)))
        # "marker" segments (empty quotes, stray end markers) are format noise: dropped.
    return mark_safe("".join(out))  # noqa: S308 - every piece above is escaped


def render_answer_parts(
    cot_answer: str, checks: Sequence[Mapping[str, Any]], final_answer: str = ""
) -> tuple[SafeString, SafeString | None]:
    """(reasoning, final answer) as chat shows them: the ``<ANSWER>:`` tag is format, not
    text, so it is never shown; the reasoning keeps its quotes marked against their checks.

    The reasoning is the text before the last tag (:func:`parse_answer`'s cut), so its quotes
    are numbered exactly as the checks were; quotes in the final answer are never checked.
    Without a tag, the stored ``final_answer`` is the final answer (a plain question/answer
    import stores the same text in both: it is shown once, with no reasoning); with neither,
    the final answer is None."""
    parsed = parse_answer(cot_answer or "")
    if parsed.final is not None:
        return render_answer(parsed.reasoning, checks), render_answer(parsed.final, [])
    final = (final_answer or "").strip()
    if not final:
        return render_answer(parsed.reasoning, checks), None
    if " ".join(final.split()) == " ".join(parsed.reasoning.split()):
        return mark_safe(""), render_answer(final, [])  # noqa: S308 - empty
    return render_answer(parsed.reasoning, checks), render_answer(final, [])


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
