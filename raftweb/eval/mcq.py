"""Multiple-choice questions (``options`` + ``correct``), scored as accuracy.

The question shown to the model lists the options as ``A. …``, ``B. …``; the final answer may
name a letter (``B``, ``(b)``, ``Answer: B.``), an option number, or repeat an option's text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from raftweb.metrics import normalize_answer

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER_RE = re.compile(r"^\W*(?:option|answer|choice)?\W*\(?([A-Z])\)?(?:[.):\s]|$)", re.I)


def mcq_prompt(question: str, options: Sequence[str]) -> str:
    """The question with its lettered options (what the model is asked)."""
    lines = [question.strip(), ""]
    lines += [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    lines += ["", "Answer with the letter of the correct option."]
    return "\n".join(lines)


def correct_index(correct: object, options: Sequence[str]) -> int | None:
    """The index of the correct option given as a letter, a 0-based index or the option text."""
    if isinstance(correct, bool):
        return None
    if isinstance(correct, int):
        return correct if 0 <= correct < len(options) else None
    text = str(correct or "").strip()
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return LETTERS.index(text.upper())
    if text.isdigit() and 0 <= int(text) < len(options):
        return int(text)
    wanted = normalize_answer(text)
    for i, opt in enumerate(options):
        if wanted and normalize_answer(opt) == wanted:
            return i
    return None


def chosen_index(final: str, options: Sequence[str]) -> int | None:
    """Which option a final answer picks, or None when it picks none (or several by text)."""
    text = (final or "").strip()
    if not text:
        return None
    m = _LETTER_RE.match(text)
    if m and m.group(1).upper() in LETTERS[: len(options)]:
        return LETTERS.index(m.group(1).upper())
    normal = normalize_answer(text)
    exact = [i for i, opt in enumerate(options) if normalize_answer(opt) == normal]
    if len(exact) == 1:
        return exact[0]
    within = [
        i
        for i, opt in enumerate(options)
        if normalize_answer(opt) and normalize_answer(opt) in normal
    ]
    return within[0] if len(within) == 1 else None
