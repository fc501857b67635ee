"""A scripted chat backend: a real :class:`ChatBackend` that answers from a script instead of
a model. It answers the RAFT prompts sensibly by default (questions about the chunk, answers
that quote it, a JSON judge verdict); tests override any kind of call with a function."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from raftweb.llm.base import (
    BackendHealth,
    ChatBackend,
    ChatMessage,
    Completion,
    GenerationParams,
    ModelSpec,
    StreamEvent,
    Usage,
)
from raftweb.llm.registry import _REGISTRY, register_backend

Responder = Callable[[list[ChatMessage]], str]


def call_kind(messages: Sequence[ChatMessage]) -> str:
    system = messages[0].content if messages else ""
    user = messages[-1].content if messages else ""
    if "question-answer pair generator" in system:
        return "questions"
    if "grader" in system:
        return "judge"
    if "None of the documents above contains the answer" in user:
        return "refusal"
    return "answer"


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 12]


def default_reply(kind: str, messages: Sequence[ChatMessage]) -> str:
    user = messages[-1].content
    if kind == "questions":
        n = int(re.search(r"generate (\d+)", messages[0].content).group(1))  # type: ignore[union-attr]
        sents = _sentences(user) or [user]
        return json.dumps([f"What does the text say in part {i + 1} about {' '.join(s.split()[:6])}?"
                           for i, s in enumerate(sents[:n])])
    if kind == "answer":
        context = user.split("Context: ", 1)[1].split("\n\nAnswer this question", 1)[0]
        first = (_sentences(context) or [context])[0]
        return f"The context says ##begin_quote##{first}##end_quote##.\n<ANSWER>: {first}"
    if kind == "refusal":
        return "The documents are about other topics.\n<ANSWER>: The context does not contain the answer."
    return json.dumps({"score": 4, "reason": "Clear question, faithful answer."})


class ScriptedBackend(ChatBackend):
    """Replies by call kind; ``script[kind]`` (a function of the messages, which may raise an
    LLMError) overrides the default. Records every call."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.script: dict[str, Responder] = {}
        self.calls: list[tuple[str, list[ChatMessage]]] = []
        self.delay_s = float(spec.extra.get("delay_s", 0.0))

    async def complete(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None, **_: Any
    ) -> Completion:
        kind = call_kind(messages)
        self.calls.append((kind, list(messages)))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        responder = self.script.get(kind)
        text = responder(list(messages)) if responder else default_reply(kind, messages)
        usage = Usage(sum(len(m.content) for m in messages) // 4, len(text) // 4)
        return Completion(text=text, usage=usage, latency_s=self.delay_s, model=self.spec.model)

    async def stream(  # type: ignore[override]
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        completion = await self.complete(messages, params)
        yield StreamEvent(delta=completion.text)
        yield StreamEvent(done=True, usage=completion.usage, latency_s=0.0)

    async def health(self) -> BackendHealth:
        return BackendHealth(True, "scripted")

    def kinds(self) -> list[str]:
        return [k for k, _ in self.calls]


if "scripted" not in _REGISTRY:
    register_backend("scripted")(ScriptedBackend)


@pytest.fixture
def scripted() -> Callable[..., ScriptedBackend]:
    def make(**extra: Any) -> ScriptedBackend:
        return ScriptedBackend(ModelSpec(backend="scripted", model="scripted", extra=extra))

    return make
