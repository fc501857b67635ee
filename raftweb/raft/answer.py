"""Parsing a RAFT answer: reasoning, quotes, ``<ANSWER>:`` final answer, refusals.

Must never raise on model output, however broken: gibberish simply parses with
``parsed_ok=False``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from raftweb.raft.prompts import ANSWER_TAG, BEGIN_QUOTE, END_QUOTE

# Tolerate the small variants models produce: "<ANSWER>:", "<ANSWER> :", "<answer>:".
_ANSWER_RE = re.compile(r"<\s*ANSWER\s*>\s*:?", re.IGNORECASE)
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


def extract_quotes(text: str) -> list[str]:
    """Text between the quote markers; an unclosed quote runs to the next marker or the end."""
    out: list[str] = []
    for m in _QUOTE_RE.finditer(text or ""):
        quote = m.group(1).replace(END_QUOTE, "").strip()
        if quote:
            out.append(quote)
    return out


def is_refusal(final: str) -> bool:
    """Whether a final answer says the context lacks the answer."""
    return bool(final) and bool(_REFUSAL_RE.search(final))


def format_answer(reasoning: str, final: str) -> str:
    """Rebuild a cot answer from its parts (used when a reviewer edits the final answer)."""
    reasoning = reasoning.strip()
    return f"{reasoning}\n{ANSWER_TAG} {final.strip()}" if reasoning else f"{ANSWER_TAG} {final}"
