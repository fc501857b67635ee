from __future__ import annotations

from corpus.dataset.render import merge_spans, render_answer, render_highlighted, spans_for


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
    assert spans_for(checks, "7") == [(1, 3)]
