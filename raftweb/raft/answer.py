"""Parsing a RAFT answer: reasoning, quotes, ``<ANSWER>:`` final answer, refusals.

Must never raise on model output, however broken: gibberish simply parses with
``parsed_ok=False``.

Quotes are found in ONE place, :func:`split_quotes`. The parser's quote list, the quote checks
built from it, and every renderer (chat, the review page) come from the same segments, so the
``i``-th quote a reader sees is always the ``i``-th quote that was checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

from raftweb.raft.prompts import ANSWER_TAG, BEGIN_QUOTE, END_QUOTE

# Tolerate the small variants models produce: "<ANSWER>:", "<ANSWER> :", "<answer>:".
_ANSWER_RE = re.compile(r"<\s*ANSWER\s*>\s*:?", re.IGNORECASE)
# A quote's body runs to its end marker, to the next begin marker, or to the end of the text
# (models often forget an end marker); it never contains a marker.
_QUOTE_RE = re.compile(
    re.escape(BEGIN_QUOTE)
    + r"(.*?)(?:"
    + re.escape(END_QUOTE)
    + r"|(?="
    + re.escape(BEGIN_QUOTE)
    + r")|$)",
    re.DOTALL,
)
_REFUSAL_RE = re.compile(
    r"("
    r"(does|do|did)\s*(not|n['’]t)\s+(contain|include|mention|provide|say|specify|state|cover)"
    r"|(is|are)\s*(not|n['’]t)\s+(mentioned|provided|specified|stated|given|included|available)"
    r"|no (information|mention|details?)\b"
    r"|cannot be (answered|determined|found)"
    r"|can(not|['’]t) (answer|determine|find|tell)"
    r"|unable to (answer|determine|find)"
    r"|(i|we) do(n['’]t| not) know"
    r"|not enough information"
    r"|insufficient information"
    r")",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    reasoning: str
    final: str | None
    quotes: list[str] = field(default_factory=list)
    parsed_ok: bool = False
    refusal: bool = False


def parse_answer(text: str | None) -> ParsedAnswer:
    text = text if isinstance(text, str) else ""
    matches = list(_ANSWER_RE.finditer(text))
    if matches:
        # The last tag wins: models sometimes restate the format before answering.
        last = matches[-1]
        reasoning = text[: last.start()].strip()
        final = text[last.end() :].strip()
        parsed_ok = bool(final)
        final = final or None
    else:
        reasoning, final, parsed_ok = text.strip(), None, False
    quotes = extract_quotes(reasoning if matches else text)
    refusal = is_refusal(final if final is not None else "")
    return ParsedAnswer(
        reasoning=reasoning, final=final, quotes=quotes, parsed_ok=parsed_ok, refusal=refusal
    )


SegmentKind = Literal["text", "quote", "marker"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class QuoteSegment:
    """One piece of a text: plain ``"text"``, a ``"quote"``, or bare quote ``"marker"`` markup.

    ``text`` is exactly ``source[start:end]`` (a quote's includes its markers), so a text's
    segments concatenate back to it. For a quote, ``quote`` is the cleaned quote (what the
    parser returns and what is verified) and ``index`` its position among the checked quotes:
    quote ``index`` of :func:`parse_answer`, hence quote check ``index``. ``index`` is ``None``
    for plain text, for markers, and for quotes the parser does not check (those after the
    ``<ANSWER>:`` tag, see :func:`answer_segments`). A marker is an empty quote or a stray end
    marker: format syntax with no content, which renderers drop.
    """

    kind: SegmentKind
    text: str
    start: int
    end: int
    quote: str = ""
    index: int | None = None

    @property
    def is_quote(self) -> bool:
        return self.kind == "quote"

    def paired(self, per_quote: Sequence[T]) -> T | None:
        """This quote's entry in a list kept per checked quote (its quote check, its
        citation), or ``None`` for a segment that is not a checked quote or past the list."""
        if self.index is None or self.index >= len(per_quote):
            return None
        return per_quote[self.index]


def split_quotes(text: str | None) -> list[QuoteSegment]:
    """Cut a text into plain text, quotes and markers — THE quote rule of the RAFT format.

    A quote starts at ``##begin_quote##`` and runs to its ``##end_quote##``; an unclosed quote
    runs to the next ``##begin_quote##`` or to the end of the text. Every non-empty quote is
    numbered, from 0, in order.
    """
    text = text if isinstance(text, str) else ""
    out: list[QuoteSegment] = []
    pos = index = 0
    for m in _QUOTE_RE.finditer(text):
        _plain(text, pos, m.start(), out)
        quote = m.group(1).strip()
        if quote:
            out.append(QuoteSegment("quote", m.group(0), m.start(), m.end(), quote, index))
            index += 1
        else:
            out.append(QuoteSegment("marker", m.group(0), m.start(), m.end()))
        pos = m.end()
    _plain(text, pos, len(text), out)
    return out


def answer_segments(text: str | None) -> list[QuoteSegment]:
    """The segments of a whole RAFT answer, numbered exactly as :func:`parse_answer` numbers
    its quotes: quotes before the last ``<ANSWER>:`` tag are checked (``index`` 0, 1, …); an
    unclosed one stops at the tag; quotes after it are shown but unchecked (``index=None``).

    A renderer of a stored answer and its quote checks walks these::

        for seg in answer_segments(cot_answer):
            if seg.kind == "text":
                emit(escape(seg.text))
            elif seg.kind == "quote":
                emit_quote(escape(seg.quote), seg.paired(checks))  # None: unchecked
            # "marker" segments (empty quotes, stray end markers) are dropped
    """
    text = text if isinstance(text, str) else ""
    matches = list(_ANSWER_RE.finditer(text))
    if not matches:
        return split_quotes(text)
    cut = matches[-1].start()
    tail = [
        replace(s, start=s.start + cut, end=s.end + cut, index=None)
        for s in split_quotes(text[cut:])
    ]
    return split_quotes(text[:cut]) + tail


def _plain(text: str, start: int, end: int, out: list[QuoteSegment]) -> None:
    """Plain text between quotes; a stray end marker in it is a marker segment."""
    pos = start
    while pos < end:
        hit = text.find(END_QUOTE, pos, end)
        stop = end if hit < 0 else hit
        if stop > pos:
            out.append(QuoteSegment("text", text[pos:stop], pos, stop))
        if hit < 0:
            break
        out.append(QuoteSegment("marker", END_QUOTE, hit, hit + len(END_QUOTE)))
        pos = hit + len(END_QUOTE)


def extract_quotes(text: str | None) -> list[str]:
    """The quotes of a text, in order (the quote segments of :func:`split_quotes`)."""
    return [s.quote for s in split_quotes(text) if s.is_quote]


def is_refusal(final: str) -> bool:
    """Whether a final answer says the context lacks the answer."""
    return bool(final) and bool(_REFUSAL_RE.search(final))


def format_answer(reasoning: str, final: str) -> str:
    """Rebuild a cot answer from its parts (used when a reviewer edits the final answer)."""
    reasoning = reasoning.strip()
    return f"{reasoning}\n{ANSWER_TAG} {final.strip()}" if reasoning else f"{ANSWER_TAG} {final}"
