"""Prompt building for the RAFT format.

The training ``instruction`` string is byte-for-byte the public RAFT reference layout: every
context document wrapped as ``<DOCUMENT>…</DOCUMENT>`` followed by a newline, then the question.
The answer-format rules live in the system message so that the user turn a fine-tuned model
sees at inference is exactly the instruction it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from raftweb.llm.base import ChatMessage

BEGIN_QUOTE = "##begin_quote##"
END_QUOTE = "##end_quote##"
ANSWER_TAG = "<ANSWER>:"
REFUSAL_ANSWER = "The context does not contain the answer."

DEFAULT_SYSTEM = (
    "You are a helpful assistant that answers questions using only the documents given "
    "in the context."
)

ANSWER_FORMAT = (
    "Answer the question using the documents in the context. First reason step by step about "
    "how to answer it. When you copy text from a document, put it between "
    f"{BEGIN_QUOTE} and {END_QUOTE}; text outside those markers is not copied. "
    f"End your response with the final answer in the form {ANSWER_TAG} $answer, kept succinct. "
    "If the documents do not contain the answer, say so plainly and end with "
    f"{ANSWER_TAG} {REFUSAL_ANSWER}"
)

QUESTIONS_SYSTEM = (
    "You are a synthetic question-answer pair generator. Given a chunk of context about some "
    "topic(s), generate {n} example questions a user could ask that would be answered using "
    "information from the chunk. For example, if the given context was a Wikipedia paragraph "
    "about the United States, an example question could be 'How many states are in the United "
    "States?'. The questions should be answerable in a few words or a sentence, must make sense "
    "without seeing the chunk, and must not refer to 'the context' or 'the chunk'. "
    "Reply with a JSON array of {n} question strings and nothing else."
)

COT_ANSWER_USER = (
    "Question: {question}\nContext: {context}\n\n"
    "Answer this question using the information given in the context above. Pay attention to:\n"
    "- First provide step-by-step reasoning on how to answer the question.\n"
    "- In the reasoning, if you need to copy paste some sentences from the context, include them "
    f"in {BEGIN_QUOTE} and {END_QUOTE}. This means that things outside of {BEGIN_QUOTE} and "
    f"{END_QUOTE} are not directly copy pasted from the context.\n"
    f"- End your response with the final answer in the form {ANSWER_TAG} $answer; the answer "
    "should be succinct.\n"
    f'You MUST begin your final answer with the tag "{ANSWER_TAG}".'
)

COT_ANSWER_SYSTEM = (
    "You are a helpful question answerer who can provide an answer given a question and "
    "relevant context."
)

REFUSAL_USER = (
    "Question: {question}\nContext:\n{context}\n\n"
    "None of the documents above contains the answer to this question. Write a short "
    "step-by-step explanation of what the documents do cover and why that does not answer the "
    f"question. You may quote them between {BEGIN_QUOTE} and {END_QUOTE}. "
    f"End with exactly: {ANSWER_TAG} {REFUSAL_ANSWER}"
)

JUDGE_SYSTEM = (
    "You are a strict grader of question-answer pairs built from a document. Score the pair "
    "from 1 (unusable) to 5 (excellent): the question must be clear and answerable from the "
    "document, and the answer must be correct and faithful to the document, without invented "
    "facts. For a pair whose expected answer is that the documents do not contain the answer, "
    "score whether that refusal is justified."
)

JUDGE_USER = (
    "Document:\n{oracle}\n\nQuestion: {question}\n\nAnswer:\n{answer}\n\n"
    'Reply with JSON only: {{"score": <integer 1-5>, "reason": "<one or two sentences>"}}'
)


@dataclass(frozen=True, slots=True)
class PromptSet:
    """Every prompt template the pipeline uses; a KB may override any of them.

    Templates use ``str.format`` fields: ``{n}`` (questions), ``{question}``, ``{context}``,
    ``{answer}``, ``{oracle}``.
    """

    system: str = DEFAULT_SYSTEM
    answer_format: str = ANSWER_FORMAT
    questions_system: str = QUESTIONS_SYSTEM
    cot_answer_system: str = COT_ANSWER_SYSTEM
    cot_answer_user: str = COT_ANSWER_USER
    refusal_user: str = REFUSAL_USER
    judge_system: str = JUDGE_SYSTEM
    judge_user: str = JUDGE_USER

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, Any] | None) -> PromptSet:
        """Defaults with the non-empty string overrides applied; unknown keys are ignored
        (an old override must not break a job) but reported by :meth:`unknown_keys`."""
        base = cls()
        if not overrides:
            return base
        names = {f.name for f in fields(cls)}
        changes = {
            k: v for k, v in overrides.items() if k in names and isinstance(v, str) and v.strip()
        }
        return replace(base, **changes)

    @classmethod
    def unknown_keys(cls, overrides: Mapping[str, Any]) -> list[str]:
        names = {f.name for f in fields(cls)}
        return sorted(k for k in overrides if k not in names)

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_PROMPTS = PromptSet()


def build_instruction(question: str, documents: Sequence[str]) -> str:
    """The training ``instruction`` string, identical to the RAFT reference ``hf`` rows."""
    context = "".join(f"<DOCUMENT>{doc}</DOCUMENT>\n" for doc in documents)
    return context + question


def build_messages(
    question: str,
    documents: Sequence[str],
    *,
    system: str | None = None,
    prompts: PromptSet = DEFAULT_PROMPTS,
) -> list[ChatMessage]:
    """Messages for a RAFT-style answer: system (persona + answer format), user (instruction)."""
    persona = prompts.system if system is None else system
    system_text = f"{persona}\n\n{prompts.answer_format}".strip()
    return [
        ChatMessage("system", system_text),
        ChatMessage("user", build_instruction(question, documents)),
    ]


def questions_messages(
    chunk: str, n: int, *, prompts: PromptSet = DEFAULT_PROMPTS
) -> list[ChatMessage]:
    """Teacher prompt: ``n`` questions answerable from ``chunk``."""
    return [
        ChatMessage("system", _fmt(prompts.questions_system, n=n)),
        ChatMessage("user", chunk),
    ]


def cot_answer_messages(
    question: str, oracle: str, *, prompts: PromptSet = DEFAULT_PROMPTS
) -> list[ChatMessage]:
    """Teacher prompt: a chain-of-thought answer quoting the oracle chunk."""
    return [
        ChatMessage("system", prompts.cot_answer_system),
        ChatMessage("user", _fmt(prompts.cot_answer_user, question=question, context=oracle)),
    ]


def refusal_messages(
    question: str, documents: Sequence[str], *, prompts: PromptSet = DEFAULT_PROMPTS
) -> list[ChatMessage]:
    """Teacher prompt for a refusal row: explain why the (distractor-only) context lacks it."""
    context = "".join(f"<DOCUMENT>{doc}</DOCUMENT>\n" for doc in documents)
    return [
        ChatMessage("system", prompts.cot_answer_system),
        ChatMessage("user", _fmt(prompts.refusal_user, question=question, context=context)),
    ]


def _fmt(template: str, **values: Any) -> str:
    """``str.format`` that tolerates a user override with stray braces or missing fields."""
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        out = template
        for key, value in values.items():
            out = out.replace("{" + key + "}", str(value))
        return out
