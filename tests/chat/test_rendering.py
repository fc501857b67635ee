from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from chat.rendering import highlight_spans, render_markdown, render_with_citations
from raftweb.raft.answer import parse_answer
from raftweb.raft.citations import Citation

HOSTILE = [
    "<script>alert('x')</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    '<a href="javascript:alert(1)">a</a>',
    "<iframe src=https://evil.example></iframe>",
    "<svg onload=alert(1)>",
    "<style>body{display:none}</style>",
    "![x](javascript:alert(1))",
    '<div onclick="steal()">hi</div>',
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
]


SAFE_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "del", "s", "code", "pre", "blockquote", "ul",
    "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th",
    "td", "q", "span", "mark",
}  # fmt: skip


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))


def assert_inert(html: str) -> None:
    """Parse the HTML as a browser would and check no element can run script."""
    parser = _Elements()
    parser.feed(html)
    for tag, attrs in parser.elements:
        assert tag in SAFE_TAGS, (tag, html)
        for name, value in attrs:
            assert not name.startswith("on"), (name, html)
            assert name not in {"style", "src", "srcdoc"}, (name, html)
            if name == "href":
                scheme = (value or "").strip().lower()
                assert not scheme.startswith(("javascript:", "data:", "vbscript:")), html


@pytest.mark.parametrize("payload", HOSTILE)
def test_it_neutralises_hostile_model_markdown(payload: str) -> None:
    html = render_markdown(f"Answer: {payload} **done**")
    assert_inert(html)
    assert "<strong>done</strong>" in html


def test_it_keeps_ordinary_markdown() -> None:
    html = render_markdown("# Title\n\n- one\n- two\n\n`code` and [link](https://example.com)")
    assert "<h1>Title</h1>" in html
    assert "<li>one</li>" in html
    assert "<code>code</code>" in html
    assert 'href="https://example.com"' in html
    assert "noopener" in html


@pytest.mark.parametrize("payload", HOSTILE)
def test_it_escapes_markup_inside_quotes(payload: str) -> None:
    text = f"Reason ##begin_quote## {payload} ##end_quote## so. <ANSWER>: yes"
    cit = Citation(n=1, quote=payload, verified=True, document="<b>doc</b>", page=2)
    html = render_with_citations(text, [cit], href_for=lambda c: '/x?a="><script>')
    assert_inert(html)
    assert "[1]</a>" in html
    # The quote itself is shown as text.
    assert "&lt;" in html or "javascript" in html or "data:" in html


def test_it_numbers_citations_and_marks_unverified() -> None:
    text = "First ##begin_quote##alpha##end_quote## then ##begin_quote##beta##end_quote##."
    cits = [
        Citation(n=1, quote="alpha", verified=True, document="a.txt"),
        Citation(n=2, quote="beta", verified=False),
    ]
    html = render_with_citations(text, cits, href_for=lambda c: f"/src/{c.n}" if c.verified else "")
    assert 'href="/src/1"' in html
    assert 'class="cite cite-verified"' in html
    assert 'class="cite cite-unverified"' in html
    assert html.index("[1]") < html.index("[2]")
    assert "##begin_quote##" not in html


def test_it_cannot_be_fooled_by_a_forged_placeholder() -> None:
    # The placeholder carries a random nonce per render, so model text that imitates a
    # placeholder stays text.
    text = "CITE0000000000000000X0 ##begin_quote##q##end_quote##"
    html = render_with_citations(text, [Citation(n=1, quote="q", verified=True)])
    assert html.count("<q ") == 1
    assert "CITE0000000000000000X0" in html


@pytest.mark.parametrize("payload", HOSTILE)
def test_it_escapes_hostile_documents_before_highlighting(payload: str) -> None:
    doc = f"Intro {payload} middle part and the end."
    start = doc.index("middle")
    html = highlight_spans(doc, [(start, start + len("middle part"))])
    assert_inert(html)
    assert '<mark id="quote-0">middle part</mark>' in html


def test_it_highlights_a_span_that_contains_markup_as_text() -> None:
    doc = "a <b>bold</b> claim"
    html = highlight_spans(doc, [(2, 13)])
    assert html == 'a <mark id="quote-0">&lt;b&gt;bold&lt;/b&gt;</mark> claim'


def test_it_merges_overlapping_spans_and_ignores_bad_ones() -> None:
    html = highlight_spans("abcdefgh", [(1, 4), (3, 6), (7, 3), (-5, 0)])
    assert html == 'a<mark id="quote-0">bcdef</mark>gh'


def test_it_keeps_citations_past_ten_apart() -> None:
    quotes = [f"quote number {i} here" for i in range(12)]
    text = " ".join(f"##begin_quote##{q}##end_quote##" for q in quotes)
    citations = [Citation(n=i + 1, quote=q, verified=True) for i, q in enumerate(quotes)]
    html = render_with_citations(text, citations, href_for=lambda c: f"/s/{c.n}")
    assert "CITE" not in html
    for i, q in enumerate(quotes):
        assert f'>{q}</q><a class="cite cite-verified" href="/s/{i + 1}"' in html


UNCLOSED_THEN_TWO = (
    "The manual says ##begin_quote## charge the phone overnight and then "
    "##begin_quote##Press and hold the Side key##end_quote## and finally "
    "##begin_quote##tap Power off##end_quote##.\n<ANSWER>: Hold the Side key, tap Power off."
)


def _shown(html: str) -> list[tuple[str, str]]:
    """(quote text, marker text) for every rendered quote, in order."""
    return re.findall(r'<q class="quote[^"]*">(.*?)</q>(?:<(?:a|span) [^>]*>\[(\d+)\])?', html)


def test_it_shows_the_same_quotes_as_the_parser_with_their_own_citations() -> None:
    # An unclosed quote followed by two closed ones: the parser finds three quotes, and so
    # must the renderer, each next to the citation that checked it.
    parsed = parse_answer(UNCLOSED_THEN_TWO)
    citations = [
        Citation(n=i + 1, quote=q, verified=i > 0, document="manual")
        for i, q in enumerate(parsed.quotes)
    ]
    html = render_with_citations(parsed.reasoning, citations, href_for=lambda c: f"/s/{c.n}")
    assert _shown(html) == [(q, str(i + 1)) for i, q in enumerate(parsed.quotes)]
    assert len(_shown(html)) == len(parsed.quotes) == 3
    assert html.count("quote-unverified") == 1 and html.count("quote-verified") == 2
    assert "##begin_quote##" not in html and "##end_quote##" not in html


def test_it_numbers_a_repeated_quote_by_position() -> None:
    text = "##begin_quote##same words##end_quote## and again ##begin_quote##same words##end_quote##"
    citations = [
        Citation(n=1, quote="same words", verified=True),
        Citation(n=2, quote="same words", verified=True),
    ]
    html = render_with_citations(text, citations, href_for=lambda c: f"/s/{c.n}")
    assert _shown(html) == [("same words", "1"), ("same words", "2")]


def test_it_does_not_pin_a_citation_on_a_different_quote() -> None:
    # A final answer quoting something the reasoning did not quote has no citation: its first
    # quote must not borrow the reasoning's first citation just by position.
    citations = [Citation(n=1, quote="from the reasoning", verified=True)]
    html = render_with_citations("##begin_quote##something else##end_quote##", citations)
    assert _shown(html) == [("something else", "")]
    # ...while a final answer repeating a cited quote shows that citation.
    html = render_with_citations("##begin_quote## From the  reasoning ##end_quote##", citations)
    assert _shown(html) == [("From the  reasoning", "1")]


def test_it_drops_empty_quotes_and_stray_end_markers() -> None:
    text = "a ##begin_quote##  ##end_quote## b ##end_quote## c ##begin_quote##q##end_quote##"
    html = render_with_citations(text, [Citation(n=1, quote="q", verified=True)])
    assert _shown(html) == [("q", "1")]
    assert "##" not in html
