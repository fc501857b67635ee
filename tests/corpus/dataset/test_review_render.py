from __future__ import annotations

import re

from corpus.dataset.render import render_answer, render_highlighted
from raftweb.raft.quotes import merge_spans, quoted_spans


def test_it_escapes_before_marking_quotes() -> None:
    html = render_answer(
        "<script>x</script> ##begin_quote##a <b>bold</b> claim##end_quote## and "
        "##begin_quote##made up##end_quote##\n<ANSWER>: <img src=x onerror=alert(1)>",
        [{"verified": True}, {"verified": False}],
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "&lt;img" in html
    assert '<mark class="quote quote-ok"' in html and "a &lt;b&gt;bold&lt;/b&gt; claim" in html
    assert '<mark class="quote quote-bad"' in html


def test_it_highlights_spans_of_the_original_text() -> None:
    text = "Hold <Side> key & tap Power off."
    html = render_highlighted(text, [(5, 11), (8, 15), (22, 31)])
    assert html == (
        'Hold <mark class="quoted">&lt;Side&gt; key</mark> &amp; tap '
        '<mark class="quoted">Power off</mark>.'
    )
    assert merge_spans([(3, 1), (0, 2), (1, 4), (50, 60)], 10) == [(0, 4)]
    checks = [
        {"verified": True, "doc_key": "7", "start": 1, "end": 3},
        {"verified": False, "doc_key": "7", "start": 4, "end": 6},
        {"verified": True, "doc_key": "8", "start": 0, "end": 2},
    ]
    assert quoted_spans(checks, "7") == [(1, 3)]


UNCLOSED_THEN_TWO = (
    "The manual says ##begin_quote## charge the phone overnight and then "
    "##begin_quote##Press and hold the Side key##end_quote## and finally "
    "##begin_quote##tap Power off##end_quote##.\n<ANSWER>: Hold the Side key, tap Power off."
)


def test_it_pairs_each_quote_with_its_own_check() -> None:
    """An unclosed quote then two closed ones: the parser (and so the checks) count three
    quotes; the page must show three, each with its own verdict (the old renderer showed two
    and marked the wrong one verified)."""
    from raftweb.raft.evidence import check_row_quotes

    oracle = "Press and hold the Side key. Then tap Power off to turn the phone off."
    verdict = check_row_quotes(
        cot_answer=UNCLOSED_THEN_TWO,
        refusal=False,
        oracle_id=7,
        oracle_text=oracle,
        context_ids=[7],
        context_texts=[oracle],
    )
    checks = verdict.check_dicts()
    assert [c["verified"] for c in checks] == [False, True, True]
    html = render_answer(UNCLOSED_THEN_TWO, checks)
    marks = re.findall(r'<mark class="quote (quote-ok|quote-bad)"[^>]*>(.*?)<span', html)
    assert marks == [
        ("quote-bad", "charge the phone overnight and then"),
        ("quote-ok", "Press and hold the Side key"),
        ("quote-ok", "tap Power off"),
    ]
