"""RAFT rows as generator training examples, exactly as chat prompts the student.

A row becomes a *conversational prompt-completion* example (TRL's format)::

    {"prompt": [system, user], "completion": [{"role": "assistant", "content": cot_answer}]}

The prompt messages come from :func:`raftweb.raft.prompts.build_messages`, the function the
chat pipeline (:mod:`raftweb.answering`) and the ``chat`` exporter call, so a tuned model is
trained on the very prompt it is served with. TRL renders both parts with the tokenizer's chat
template (the prompt with ``add_generation_prompt=True``, as the ``hf`` backend does) and masks
the loss to the completion: the assistant turn, its end-of-turn token included
(``completion_only_loss``). :func:`prompt_length` and :func:`example_length` use the same
rendering, for the max-length suggestion and for tests.

Django-free; importing this module is cheap (the ``datasets`` import is deferred).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from raftweb.errors import Invalid
from raftweb.raft.formats import RaftRow
from raftweb.raft.prompts import build_messages

_ROW_FIELDS = {f.name for f in fields(RaftRow)}
# Rounding for a max_seq_length suggested from the data: shapes in multiples of 64 suit GPUs.
LENGTH_MULTIPLE = 64


class DataError(Invalid):
    """A training data file the script cannot use; the message names the file and the line."""


# ------------------------------------------------------------------------------- reading


def row_from_dict(data: dict[str, Any], *, line: int = 0) -> RaftRow:
    """A :class:`RaftRow` from one ``data/*.jsonl`` object (``dataclasses.asdict`` of a row);
    keys it does not know go to ``extra``, missing optional ones take neutral defaults."""
    if not isinstance(data.get("question"), str) or not isinstance(data.get("cot_answer"), str):
        raise ValueError("needs string 'question' and 'cot_answer'")
    texts = data.get("context_texts") or []
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError("'context_texts' must be a list of strings")
    values: dict[str, Any] = {
        "id": str(data.get("id") or f"line-{line}"),
        "question": data["question"],
        "cot_answer": data["cot_answer"],
        "final_answer": str(data.get("final_answer") or ""),
        "context_ids": list(data.get("context_ids") or []),
        "context_texts": list(texts),
        "context_titles": list(data.get("context_titles") or []),
        "oracle_index": data.get("oracle_index"),
    }
    for key in _ROW_FIELDS - set(values) - {"extra"}:
        if key in data:
            values[key] = data[key]
    extra = dict(data.get("extra") or {})
    extra.update({k: v for k, v in data.items() if k not in _ROW_FIELDS})
    return RaftRow(**values, extra=extra)


def read_rows(path: Path) -> list[RaftRow]:
    """The rows of a JSONL file (missing file: no rows). A bad line raises :class:`DataError`
    naming the file and line: a silently shorter dataset would be worse than a stop."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[RaftRow] = []
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                rows.append(row_from_dict(data, line=number))
            except ValueError as exc:  # JSONDecodeError is a ValueError
                raise DataError(f"{path.name} line {number}: {exc}") from None
    return rows


def hold_out(rows: Sequence[RaftRow], share: float) -> tuple[list[RaftRow], list[RaftRow]]:
    """(train, eval): a stable ``share`` of the rows held out by a hash of their id, so that a
    re-run (a resume) holds out the same rows whatever their order."""
    n_eval = int(len(rows) * share)
    if n_eval == 0 or len(rows) - n_eval < 1:
        return list(rows), []
    ranked = sorted(rows, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
    held = {r.id for r in ranked[:n_eval]}
    return [r for r in rows if r.id not in held], [r for r in rows if r.id in held]


# ------------------------------------------------------------------------------- rendering


def row_prompt(row: RaftRow, *, system: str | None = None) -> list[dict[str, str]]:
    """The prompt messages chat sends for this row's question and context documents."""
    return [m.as_dict() for m in build_messages(row.question, row.context_texts, system=system)]


def row_example(row: RaftRow, *, system: str | None = None) -> dict[str, Any]:
    """One conversational prompt-completion example; the completion is the chain-of-thought
    answer (which ends with ``<ANSWER>: ...``)."""
    return {
        "prompt": row_prompt(row, system=system),
        "completion": [{"role": "assistant", "content": row.cot_answer}],
    }


def usable(row: RaftRow) -> bool:
    return bool(row.question.strip() and row.cot_answer.strip())


def token_ids(encoded: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); 4.x a list.
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        return list(encoded["input_ids"])
    return list(encoded)


def prompt_length(tokenizer: Any, example: dict[str, Any]) -> int:
    """Tokens of the rendered prompt, generation prompt included (what the model reads)."""
    return len(
        token_ids(
            tokenizer.apply_chat_template(
                example["prompt"], tokenize=True, add_generation_prompt=True
            )
        )
    )


def example_length(tokenizer: Any, example: dict[str, Any]) -> int:
    """Tokens of the rendered prompt + answer: one training sequence."""
    messages = example["prompt"] + example["completion"]
    return len(token_ids(tokenizer.apply_chat_template(messages, tokenize=True)))


def suggest_max_seq_length(lengths: Iterable[int], *, cap: int, model_max: int | None) -> int:
    """The longest sequence, rounded up to a multiple of 64, within ``cap`` and the model's
    maximum (its ``max_position_embeddings``)."""
    longest = max(lengths, default=0)
    limit = min(cap, model_max) if model_max else cap
    rounded = -(-max(longest, 1) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE
    return max(1, min(rounded, limit))


@dataclass
class Prepared:
    """Examples ready for the trainer, and what was left out."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    max_seq_length: int
    longest: int  # tokens of the longest usable row (before the cut)
    dropped_too_long: int
    dropped_empty: int


def prepare_examples(
    tokenizer: Any,
    train_rows: Sequence[RaftRow],
    eval_rows: Sequence[RaftRow],
    *,
    max_seq_length: int,
    cap: int,
    model_max: int | None,
    system: str | None = None,
) -> Prepared:
    """Render the rows; choose the sequence length (``max_seq_length`` 0: from the data) and
    leave out rows longer than it. Rows are left out rather than cut: a cut answer would teach
    the model to stop before its ``<ANSWER>:`` line."""
    dropped_empty = 0
    rendered: list[tuple[str, dict[str, Any], int]] = []
    for part, rows in (("train", train_rows), ("eval", eval_rows)):
        for row in rows:
            if not usable(row):
                dropped_empty += 1
                continue
            example = row_example(row, system=system)
            rendered.append((part, example, example_length(tokenizer, example)))
    longest = max((n for _, _, n in rendered), default=0)
    if max_seq_length > 0:
        limit = min(max_seq_length, model_max) if model_max else max_seq_length
    else:
        limit = suggest_max_seq_length([n for _, _, n in rendered], cap=cap, model_max=model_max)
    train = [ex for part, ex, n in rendered if part == "train" and n <= limit]
    evals = [ex for part, ex, n in rendered if part == "eval" and n <= limit]
    dropped = sum(1 for _, _, n in rendered if n > limit)
    return Prepared(train, evals, limit, longest, dropped, dropped_empty)


def to_dataset(examples: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` of examples (what SFTTrainer takes)."""
    from datasets import Dataset

    return Dataset.from_list(examples)


__all__ = [
    "DataError",
    "Prepared",
    "example_length",
    "hold_out",
    "prepare_examples",
    "prompt_length",
    "read_rows",
    "row_example",
    "row_from_dict",
    "row_prompt",
    "suggest_max_seq_length",
    "to_dataset",
    "token_ids",
]
