"""Reading evaluation question sets (JSON lines), engine side.

Three shapes are read, one object per line:

- open questions: ``question``, ``answer`` and optional ``gold`` (document names);
- multiple choice: ``question``, ``options`` (a list) and ``correct`` (a letter, a 0-based
  index or the option's text), scored as accuracy;
- the RAFT reference script's ``eval`` format: ``question``, ``gold_final_answer`` and
  ``context``; RAFTweb's own ``--format eval`` export writes those keys too, with its extras
  (``oracle_chunk_id``, ``refusal``, ...) beside them.

Bad lines are reported by number and skipped; nothing is guessed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from raftweb.eval.mcq import correct_index

ANSWER_KEYS = ("answer", "gold_final_answer", "gold_answer", "final_answer")
GOLD_KEYS = ("gold", "gold_documents", "gold_docs", "documents")
MAX_QUESTION_CHARS = 20_000


@dataclass(slots=True)
class EvalItem:
    question: str
    answer: str = ""
    gold: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    correct: int | None = None
    refusal: bool = False
    oracle_chunk_id: str = ""
    shape: str = "open"  # open | mcq | reference

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalItem:
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})  # type: ignore[arg-type]


@dataclass(slots=True)
class ParsedSet:
    items: list[EvalItem] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def parse_question_lines(text: str) -> ParsedSet:
    out = ParsedSet()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            out.errors.append((lineno, f"invalid JSON: {exc}"))
            continue
        if not isinstance(obj, dict):
            out.errors.append((lineno, "expected a JSON object"))
            continue
        try:
            out.items.append(item_from_object(obj))
        except ValueError as exc:
            out.errors.append((lineno, str(exc)))
    return out


def item_from_object(obj: Mapping[str, Any]) -> EvalItem:
    question = _text(obj.get("question"))
    if not question:
        raise ValueError("missing question")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"question longer than {MAX_QUESTION_CHARS} characters")
    gold = _names(next((obj[k] for k in GOLD_KEYS if k in obj), None))
    oracle = obj.get("oracle_chunk_id")
    oracle_id = str(oracle) if isinstance(oracle, int | str) and str(oracle).strip() else ""
    refusal = obj.get("refusal") is True
    if "options" in obj:
        options = obj["options"]
        if not isinstance(options, list) or len(options) < 2:
            raise ValueError("options must be a list of at least two choices")
        options = [_text(o) for o in options]
        if not all(options):
            raise ValueError("every option must be non-empty text")
        correct = correct_index(obj.get("correct"), options)
        if correct is None:
            raise ValueError(f"correct {obj.get('correct')!r} names none of the options")
        return EvalItem(question, options[correct], gold, options, correct, False, oracle_id, "mcq")
    answer = next((_text(obj[k]) for k in ANSWER_KEYS if _text(obj.get(k))), "")
    if not answer and not refusal:
        raise ValueError("missing answer (answer or gold_final_answer)")
    shape = "reference" if "gold_final_answer" in obj else "open"
    return EvalItem(question, answer, gold, [], None, refusal, oracle_id, shape)


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return value.strip() if isinstance(value, str) else ""


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return []
