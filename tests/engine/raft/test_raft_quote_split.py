"""One quote splitter: the parser's quotes and every renderer's quotes are the same list.

A renderer that walks :func:`answer_segments` marks quote ``i`` with quote check ``i``; the
parser's quote ``i`` is the quote that check ``i`` verified. So the two can never drift apart,
whatever markers a model writes.
"""

from __future__ import annotations

import random
import re
from html import escape

from raftweb.raft.answer import (
    QuoteSegment,
    answer_segments,
    extract_quotes,
    parse_answer,
    split_quotes,
)
from raftweb.raft.prompts import BEGIN_QUOTE, END_QUOTE
from raftweb.raft.quotes import verify_quotes

B, E = BEGIN_QUOTE, END_QUOTE

# The exact case of the issue: an unclosed quote followed by two closed ones.
UNCLOSED_THEN_TWO = (
    f"The manual says {B} charge the phone overnight and then "
    f"{B}Press and hold the Side key{E} and finally {B}tap Power off{E}.\n"
    "<ANSWER>: Hold the Side key, then tap Power off."
)
DOC = "Press and hold the Side key for two seconds. Then tap Power off to shut it down."


def render(cot_answer: str, checks: list[dict[str, object]]) -> tuple[str, list[tuple[str, bool]]]:
    """A renderer written as the docs tell renderers to be written: walk the segments."""
    html: list[str] = []
    marked: list[tuple[str, bool]] = []
    for seg in answer_segments(cot_answer):
        if seg.kind == "text":
            html.append(escape(seg.text))
        elif seg.kind == "quote":
            check = seg.paired(checks)
            ok = check is not None and bool(check["verified"])
            marked.append((seg.quote, ok))
            html.append(f'<mark class="{"ok" if ok else "bad"}">{escape(seg.quote)}</mark>')
    return "".join(html), marked


def test_an_unclosed_quote_then_two_closed_ones_pairs_every_quote_with_its_own_check() -> None:
    parsed = parse_answer(UNCLOSED_THEN_TWO)
    assert parsed.quotes == [
        "charge the phone overnight and then",
        "Press and hold the Side key",
        "tap Power off",
    ]
    checks = [c.as_dict() for c in verify_quotes(parsed.quotes, {"d": DOC})]
    assert [c["verified"] for c in checks] == [False, True, True]

    html, marked = render(UNCLOSED_THEN_TWO, checks)
    # Parser count == renderer count, and quote i is shown with check i.
    assert len(marked) == len(parsed.quotes) == len(checks) == 3
    assert marked == [(c["quote"], c["verified"]) for c in checks]
    assert [q for q, _ in marked] == parsed.quotes
    assert B not in html and E not in html
    assert html.count('class="ok"') == 2 and html.count('class="bad"') == 1
    assert '<mark class="bad">charge the phone overnight and then</mark>' in html


def test_segments_give_offsets_in_the_original_text() -> None:
    segs = split_quotes(UNCLOSED_THEN_TWO)
    quotes = [s for s in segs if s.is_quote]
    assert [s.index for s in quotes] == [0, 1, 2]
    for s in segs:
        assert UNCLOSED_THEN_TWO[s.start : s.end] == s.text
    # An unclosed quote ends where the next one begins; a closed one includes its end marker.
    assert quotes[0].text.startswith(B) and quotes[0].text.endswith("and then ")
    assert quotes[1].text == f"{B}Press and hold the Side key{E}"


def test_empty_quotes_and_stray_end_markers_are_markup_not_quotes() -> None:
    text = f"a {B}   {E} b {E} c {B}real{E}"
    segs = split_quotes(text)
    assert [(s.kind, s.text) for s in segs] == [
        ("text", "a "),
        ("marker", f"{B}   {E}"),
        ("text", " b "),
        ("marker", E),
        ("text", " c "),
        ("quote", f"{B}real{E}"),
    ]
    assert [s.index for s in segs if s.is_quote] == [0]
    assert extract_quotes(text) == ["real"]


def test_quotes_after_the_answer_tag_are_shown_but_not_numbered() -> None:
    text = f"Because {B}one{E} and {B}unclosed\n<ANSWER>: {B}two{E}"
    parsed = parse_answer(text)
    assert parsed.quotes == ["one", "unclosed"]
    segs = answer_segments(text)
    assert "".join(s.text for s in segs) == text
    assert [(s.quote, s.index) for s in segs if s.is_quote] == [
        ("one", 0),
        ("unclosed", 1),
        ("two", None),
    ]
    # The unclosed quote stops at the tag: the final answer is never swallowed into a quote.
    assert "<ANSWER>" not in next(s for s in segs if s.index == 1).text
    # Pairing with a per-quote list: unchecked quotes and plain text pair with nothing.
    checks = ["check 0", "check 1"]
    assert [s.paired(checks) for s in segs] == [
        None, "check 0", None, "check 1", None, None, None
    ]  # fmt: skip
    assert [s.paired(checks[:1]) for s in segs if s.is_quote] == ["check 0", None, None]


def test_it_never_raises_and_handles_empty_input() -> None:
    for junk in ["", None, "\x00", B, E, B + E, B * 3, "<ANSWER>:", f"{B}x<ANSWER>:{E}"]:
        segs = split_quotes(junk)  # type: ignore[arg-type]
        assert "".join(s.text for s in segs) == (junk or "")
        segs = answer_segments(junk)  # type: ignore[arg-type]
        assert "".join(s.text for s in segs) == (junk or "")
    assert split_quotes("") == []
    assert split_quotes("plain") == [QuoteSegment("text", "plain", 0, 5)]


# The parser's rule before the splitter existed, kept here as the reference it must not change:
# a quote runs to its end marker, to the next begin marker, or to the end of the text.
_OLD_QUOTE_RE = re.compile(
    re.escape(B) + r"(.*?)(?:" + re.escape(E) + r"|(?=" + re.escape(B) + r")|$)", re.DOTALL
)


def _old_extract(text: str) -> list[str]:
    quotes = (m.group(1).replace(E, "").strip() for m in _OLD_QUOTE_RE.finditer(text))
    return [q for q in quotes if q]


_PIECES = [
    B,
    E,
    B,
    E,
    "a",
    "bc d",
    " ",
    "\n",
    "#",
    "##",
    "begin_quote##",
    "<ANSWER>:",
    "é",
    "  x  ",
]


def test_random_marker_arrangements_round_trip_and_agree_with_the_parser() -> None:
    rng = random.Random(20240611)
    for _ in range(3000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 14)))
        for segs in (split_quotes(text), answer_segments(text)):
            # The segments tile the text exactly, in order.
            assert "".join(s.text for s in segs) == text, text
            pos = 0
            for s in segs:
                assert s.start == pos and s.end > s.start and text[s.start : s.end] == s.text
                pos = s.end
                if s.is_quote:
                    assert s.quote and s.quote == s.quote.strip()
                else:
                    assert s.quote == "" and s.index is None
            assert pos == len(text)
        quotes = [s for s in split_quotes(text) if s.is_quote]
        assert [s.quote for s in quotes] == extract_quotes(text) == _old_extract(text), text
        assert [s.index for s in quotes] == list(range(len(quotes)))
        # Whole answers: the numbered quotes are exactly the parser's quotes, in order.
        numbered = [s for s in answer_segments(text) if s.is_quote and s.index is not None]
        assert [s.quote for s in numbered] == parse_answer(text).quotes, text
        assert [s.index for s in numbered] == list(range(len(numbered)))
