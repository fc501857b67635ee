"""Property-based tests of the RAFT answer parser (hypothesis): it never raises on model
output, its segments always reassemble the text, and what the format writes it reads back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftweb.raft.answer import (
    answer_segments,
    extract_quotes,
    format_answer,
    parse_answer,
    split_quotes,
)
from raftweb.raft.prompts import ANSWER_TAG, BEGIN_QUOTE, END_QUOTE

SETTINGS = settings(max_examples=300, deadline=None)

# Model output: any text, salted with the format's markup in every broken arrangement.
MARKUP = st.sampled_from(
    [
        BEGIN_QUOTE,
        END_QUOTE,
        ANSWER_TAG,
        "<answer>:",
        "< ANSWER > :",
        "<ANSWER>",
        "##begin_quote",
        "##Reason:",
        "\n",
        " ",
    ]
)
OUTPUT = st.lists(st.one_of(st.text(max_size=30), MARKUP), max_size=40).map("".join)
CLEAN = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="#<>"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s and s)


@SETTINGS
@given(text=st.one_of(OUTPUT, st.text(max_size=500), st.none()))
def test_it_never_raises_and_stays_consistent(text: str | None) -> None:
    parsed = parse_answer(text)
    assert parsed.parsed_ok == (parsed.final is not None)
    if parsed.final is not None:
        assert parsed.final == parsed.final.strip() and parsed.final
    assert all(q and q == q.strip() for q in parsed.quotes)
    assert all(BEGIN_QUOTE not in q and END_QUOTE not in q for q in parsed.quotes)
    if parsed.refusal:
        assert parsed.final is not None


@SETTINGS
@given(text=OUTPUT)
def test_segments_reassemble_the_text_and_number_the_checked_quotes(text: str) -> None:
    for segments in (split_quotes(text), answer_segments(text)):
        assert "".join(s.text for s in segments) == text
        pos = 0
        for s in segments:
            assert (s.start, s.end) == (pos, pos + len(s.text)) and text[s.start : s.end] == s.text
            pos = s.end
    checked = [s for s in answer_segments(text) if s.is_quote and s.index is not None]
    assert [s.index for s in checked] == list(range(len(checked)))
    # the i-th quote a reader sees is the i-th quote the parser returns (and that is checked)
    assert [s.quote for s in checked] == parse_answer(text).quotes
    assert [s.quote for s in split_quotes(text) if s.is_quote] == extract_quotes(text)


@SETTINGS
@given(
    quotes=st.lists(CLEAN, max_size=5),
    glue=st.lists(CLEAN, min_size=6, max_size=6),
    final=CLEAN,
)
def test_what_the_format_writes_it_reads_back(
    quotes: list[str], glue: list[str], final: str
) -> None:
    reasoning = glue[0] + "".join(
        f" {BEGIN_QUOTE}{q}{END_QUOTE} {g}" for q, g in zip(quotes, glue[1:], strict=False)
    )
    parsed = parse_answer(format_answer(reasoning, final))
    assert parsed.parsed_ok and parsed.final == final
    assert parsed.quotes == quotes
    assert parsed.reasoning == reasoning.strip()
