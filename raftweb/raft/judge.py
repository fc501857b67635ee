"""The judge: prompt, and a robust parser of a 1–5 score with a reason.

``parse_judge`` returns ``None`` when no valid score can be read; callers retry once and then
leave the row unscored. A score is never invented (never 0)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from raftweb.llm.base import ChatMessage
from raftweb.raft.prompts import DEFAULT_PROMPTS, PromptSet, _fmt

DEFAULT_THRESHOLD = 3

_SCORE_PATTERNS = [
    re.compile(
        r"score\W{0,5}(?:is|of|=|:)?\s*\**\s*([1-5](?:\.\d+)?)\b(?!\s*/\s*(?:10|100))",
        re.IGNORECASE,
    ),
    re.compile(r"\b([1-5](?:\.0)?)\s*/\s*5\b"),
    re.compile(r"\b([1-5])\s+out of\s+5\b", re.IGNORECASE),
    re.compile(r"^\s*([1-5])\s*$"),
]
_REASON_RE = re.compile(r"reason(?:ing)?\s*[:=-]\s*(.+)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class JudgeVerdict:
    score: int
    reason: str


def judge_messages(
    *, question: str, answer: str, oracle: str, prompts: PromptSet = DEFAULT_PROMPTS
) -> list[ChatMessage]:
    return [
        ChatMessage("system", prompts.judge_system),
        ChatMessage(
            "user", _fmt(prompts.judge_user, question=question, answer=answer, oracle=oracle)
        ),
    ]


def parse_judge(text: str | None) -> JudgeVerdict | None:
    text = (text if isinstance(text, str) else "").strip()
    if not text:
        return None
    verdict = _from_json(text)
    if verdict is not None:
        return verdict
    for pattern in _SCORE_PATTERNS:
        m = pattern.search(text)
        if m:
            score = _valid_score(m.group(1))
            if score is None:
                continue
            rm = _REASON_RE.search(text)
            reason = rm.group(1).strip() if rm else text
            return JudgeVerdict(score, reason[:2000])
    return None


def _from_json(text: str) -> JudgeVerdict | None:
    start, end = text.find("{"), text.rfind("}")
    if not 0 <= start < end:
        return None
    try:
        data = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    lowered = {str(k).lower(): v for k, v in data.items()}
    score = _valid_score(lowered.get("score", lowered.get("rating")))
    if score is None:
        return None
    reason = lowered.get("reason", lowered.get("reasoning", lowered.get("explanation", "")))
    return JudgeVerdict(score, str(reason or "")[:2000])


def _valid_score(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    if number != number or not 1 <= number <= 5:  # NaN or out of range
        return None
    return int(round(number))
