"""Follow-up question rewriting: make a chat turn answerable without the conversation.

Retrieval sees one question at a time, so "and how long does it take?" must become "how long
does a factory reset take?" before the knowledge base is searched. The first message of a
conversation is already stand-alone, so no model call is made for it.

Engine module: never imports Django.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from raftweb.llm.base import ChatBackend, ChatMessage, GenerationParams, LLMError, Usage

REWRITE_SYSTEM = (
    "You rewrite the user's latest message into a single stand-alone question that can be "
    "understood without the conversation. Resolve pronouns and references using the "
    "conversation. Keep the user's wording and language where possible. If the message is "
    "already stand-alone, return it unchanged. Reply with the question only: no preamble, no "
    "quotes, no answer."
)

# How much of the conversation the rewriter sees: recent turns matter, old ones only cost time.
MAX_HISTORY_TURNS = 6
MAX_TURN_CHARS = 1200
# A rewrite much longer than the question is the model answering instead of rewriting.
MAX_GROWTH = 4
MIN_MAX_CHARS = 300

_PREFIX_RE = re.compile(
    r"^\s*(?:stand[- ]?alone question|rewritten question|question|rewrite)\s*:\s*", re.I
)


@dataclass(frozen=True, slots=True)
class Rewrite:
    question: str
    rewritten: bool
    usage: Usage = Usage()
    error: str = ""


def build_rewrite_messages(history: Sequence[ChatMessage], question: str) -> list[ChatMessage]:
    """The prompt: recent turns as a transcript, then the follow-up to rewrite."""
    turns = [m for m in history if m.role in ("user", "assistant")][-MAX_HISTORY_TURNS:]
    transcript = "\n".join(
        f"{'User' if m.role == 'user' else 'Assistant'}: {_clip(m.content)}" for m in turns
    )
    user = (
        f"Conversation:\n{transcript}\n\n"
        f"Latest message: {question.strip()}\n\n"
        "Stand-alone question:"
    )
    return [ChatMessage("system", REWRITE_SYSTEM), ChatMessage("user", user)]


def clean_rewrite(text: str, original: str) -> str:
    """The question from a rewriter reply, or the original when the reply is unusable."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return original
    candidate = _PREFIX_RE.sub("", lines[0]).strip().strip("\"'“”‘’`").strip()
    limit = max(MIN_MAX_CHARS, MAX_GROWTH * len(original))
    if not candidate or len(candidate) > limit:
        return original
    return candidate


def needs_rewrite(history: Sequence[ChatMessage]) -> bool:
    return any(m.role == "user" for m in history)


async def rewrite_question(
    backend: ChatBackend | None,
    history: Sequence[ChatMessage],
    question: str,
    *,
    params: GenerationParams | None = None,
) -> Rewrite:
    """Rewrite ``question`` into a stand-alone one; never fails (falls back to the original).

    A model error here must not block the answer: retrieval with the raw follow-up is worse
    but still useful, and the answer call will surface a down server anyway.
    """
    if backend is None or not needs_rewrite(history):
        return Rewrite(question=question, rewritten=False)
    params = params or GenerationParams(max_tokens=96, temperature=0.0)
    try:
        completion = await backend.complete(build_rewrite_messages(history, question), params)
    except LLMError as exc:
        return Rewrite(question=question, rewritten=False, error=str(exc))
    cleaned = clean_rewrite(completion.text, question)
    return Rewrite(question=cleaned, rewritten=cleaned != question, usage=completion.usage)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TURN_CHARS else text[: MAX_TURN_CHARS - 1] + "…"
