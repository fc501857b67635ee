"""Turn untrusted text (model answers, document chunks) into safe HTML.

Everything shown in the chat comes from a model or from an uploaded document, so nothing here
trusts its input: Markdown is rendered with raw HTML disabled, the result goes through an
``nh3`` allowlist, and every piece of HTML we add ourselves (citation markers, quote
highlights) is built from escaped text *after* sanitising, through placeholders that the
untrusted text cannot forge (a random nonce per render).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from functools import lru_cache
from html import escape

import nh3
from markdown_it import MarkdownIt

from raftweb.raft.answer import QuoteSegment, split_quotes
from raftweb.raft.citations import Citation
from raftweb.raft.quotes import merge_spans

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "p", "br", "hr", "strong", "em", "b", "i", "del", "s", "code", "pre", "blockquote",
        "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a",
        "table", "thead", "tbody", "tr", "th", "td",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {"a": {"href", "title"}, "ol": {"start"}}
ALLOWED_URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # "html": False makes raw HTML in the source come out as text, not markup; linkify is off
    # so that bare text never becomes a link the model did not write.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
        ["table", "strikethrough"]
    )


def sanitize_html(html: str) -> str:
    """Allowlist-sanitise an HTML fragment (last line of defence after Markdown rendering)."""
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=set(ALLOWED_URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def render_markdown(text: str) -> str:
    """Markdown from an untrusted source → sanitised HTML."""
    return sanitize_html(_markdown().render(text or ""))


def citation_marker(citation: Citation, href: str) -> str:
    """The ``[n]`` link shown next to a quote; built only from escaped values."""
    state = "verified" if citation.verified else "unverified"
    title = f"{citation.document}, page {citation.page}" if citation.page else citation.document
    if not citation.verified:
        title = f"Not found in the sources: {title}" if title else "Not found in the sources"
    if href:
        return (
            f'<a class="cite cite-{state}" href="{escape(href)}" title="{escape(title)}" '
            f'data-cite="{citation.n}">[{citation.n}]</a>'
        )
    return f'<span class="cite cite-{state}" title="{escape(title)}">[{citation.n}]</span>'


def render_with_citations(
    text: str,
    citations: Sequence[Citation],
    *,
    href_for: Callable[[Citation], str] = lambda c: "",
) -> str:
    """Render text whose ``##begin_quote##…##end_quote##`` quotes become numbered citations.

    Quotes are found by the RAFT module's one splitter (:func:`split_quotes`), the same that
    produced the quotes the citations checked, so quote ``i`` of the reasoning is citation
    ``i``. A quote whose text differs from citation ``i`` (a quote in the final answer, after
    the reasoning's quotes) takes the citation with its text, or none: a citation is never
    pinned on a quote it did not check. Empty quotes and stray markers are dropped.

    Each quote is swapped for a random placeholder before Markdown runs, so markup inside a
    quote can neither break out nor be rendered; the placeholder is then replaced by the
    escaped quote and its marker.
    """
    nonce = secrets.token_hex(8)
    pieces: dict[str, str] = {}
    by_quote = {_norm(c.quote): c for c in reversed(citations)}
    source: list[str] = []
    for seg in split_quotes(text or ""):
        if seg.kind == "text":
            source.append(seg.text)
            continue
        if not seg.is_quote:
            continue  # an empty quote or a stray end marker: syntax, not content
        key = f"CITE{nonce}X{len(pieces)}Z"  # the Z ends it: X1 must not match the start of X10
        cit = _citation_for(seg, citations, by_quote)
        if cit is not None:
            state = "verified" if cit.verified else "unverified"
            pieces[key] = (
                f'<q class="quote quote-{state}">{escape(seg.quote)}</q>'
                f"{citation_marker(cit, href_for(cit))}"
            )
        else:
            pieces[key] = f'<q class="quote">{escape(seg.quote)}</q>'
        source.append(key)
    html = render_markdown("".join(source))
    # One pass, so a piece that was already put in is never scanned again.
    html = re.sub(f"CITE{nonce}X\\d+Z", lambda m: pieces.get(m.group(0), m.group(0)), html)
    return html


def _citation_for(
    seg: QuoteSegment, citations: Sequence[Citation], by_quote: dict[str, Citation]
) -> Citation | None:
    """Citation ``seg.index`` when it checked this very quote, else the one that checked the
    same words (a final answer repeating a quote), else none."""
    quote = _norm(seg.quote)
    cit = seg.paired(citations)
    if cit is not None and _norm(cit.quote) == quote:
        return cit
    return by_quote.get(quote)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def highlight_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """Escape ``text`` and wrap the given character spans in ``<mark>``.

    Escaping happens per slice, after the spans are chosen, so offsets always refer to the
    raw text and no span can cut an entity in half. Overlapping spans are merged.
    """
    out: list[str] = []
    pos = 0
    for i, (start, end) in enumerate(merge_spans(spans, len(text))):
        out.append(escape(text[pos:start]))
        out.append(f'<mark id="quote-{i}">{escape(text[start:end])}</mark>')
        pos = end
    out.append(escape(text[pos:]))
    return "".join(out)
