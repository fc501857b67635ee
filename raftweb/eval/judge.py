"""The answer-correctness judge of evaluation: question, reference answer, model answer -> a
1-5 score with a reason. The score is read by the one judge parser of the RAFT module
(:func:`raftweb.raft.judge.parse_judge`); an answer is *correct* at ``CORRECT_AT`` or above.

Hard correctness takes the verdict as it is. Soft correctness forgives an honest refusal: when
the oracle document was not retrieved, saying the context does not contain the answer counts
as correct (the model could not have known)."""

from __future__ import annotations

from raftweb.llm.base import ChatMessage
from raftweb.raft.judge import JudgeVerdict, parse_judge

CORRECT_AT = 4

JUDGE_SYSTEM = (
    "You are a strict grader of answers to questions, given a reference answer. Judge only "
    "whether the answer "
    "states the same facts as the reference (wording may differ; extra correct detail is "
    "fine; a wrong or missing key fact is not)."
)
JUDGE_USER = (
    "Question: {question}\n\nReference answer: {reference}\n\nAnswer to grade: {answer}\n\n"
    'Reply with JSON only: {{"score": <integer 1-5, 5 = fully correct>, "reason": "<one '
    'sentence>"}}'
)


def correctness_messages(*, question: str, reference: str, answer: str) -> list[ChatMessage]:
    return [
        ChatMessage("system", JUDGE_SYSTEM),
        ChatMessage(
            "user",
            JUDGE_USER.format(question=question, reference=reference, answer=answer or "(empty)"),
        ),
    ]


def parse_correctness(text: str | None) -> JudgeVerdict | None:
    return parse_judge(text)


def is_correct(score: int | None) -> bool | None:
    return None if score is None else score >= CORRECT_AT


def soft_correct(*, hard: bool | None, oracle_retrieved: bool | None, refused: bool) -> bool | None:
    """Soft correctness: a refusal when the oracle was not retrieved is correct; otherwise the
    hard verdict. ``None`` when the judge gave no verdict: a judge metric never comes from the
    refusal rule alone."""
    if hard is None:
        return None
    if oracle_retrieved is False and refused:
        return True
    return hard
