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
from raftweb.llm.registry import available_backends, register_backend

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
        words = user.split() or ["nothing"]
        ordinals = ["first", "second", "third", "fourth", "fifth", "sixth"]
        return json.dumps(
            [
                f"In the {ordinals[i % 6]} place, what is said about "
                f"{' '.join(words[i * 4 : i * 4 + 4] or words[:2])}?"
                for i in range(n)
            ]
        )
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


if "scripted" not in available_backends():
    register_backend("scripted")(ScriptedBackend)


@pytest.fixture
def scripted() -> Callable[..., ScriptedBackend]:
    def make(**extra: Any) -> ScriptedBackend:
        return ScriptedBackend(ModelSpec(backend="scripted", model="scripted", extra=extra))

    return make


# ----------------------------------------------------------------------------- Django helpers

MANUAL = {
    "power.txt": [
        "To turn the phone off, press and hold the Side key and the Volume down key together. "
        "Then tap Power off on the screen to confirm.",
        "To restart the device, open the power menu and tap Restart. The phone boots again in "
        "about thirty seconds.",
    ],
    "camera.txt": [
        "The camera app opens when you press the Side key twice quickly. Swipe up or down on the "
        "preview screen to switch between the front and rear cameras.",
        "Scene optimizer adjusts colour settings automatically when it recognises food, sky or "
        "landscapes in the frame.",
    ],
    "battery.txt": [
        "Wireless PowerShare lets you charge a watch or earbuds from the back of the phone. The "
        "feature stops when the battery falls below thirty percent.",
        "Fast cable charging needs the supplied adapter; a full charge takes around seventy minutes.",
    ],
}


@pytest.fixture
def manual_kb(db: object) -> Any:
    """A KB with three ready documents and two chunks each, created directly in the database."""
    import hashlib

    from corpus.models import Chunk, Document, KnowledgeBase

    kb = KnowledgeBase.objects.create(slug="manual", name="Manual")
    for name, texts in MANUAL.items():
        doc = Document.objects.create(
            kb=kb,
            name=name,
            original_filename=name,
            file_path=name,
            content_hash=hashlib.sha256(name.encode()).hexdigest(),
            status=Document.Status.READY,
            chunk_count=len(texts),
        )
        pos = 0
        for i, text in enumerate(texts):
            Chunk.objects.create(
                document=doc,
                ordinal=i,
                text=text,
                start=pos,
                end=pos + len(text),
                hash=hashlib.sha256(text.encode()).hexdigest(),
            )
            pos += len(text)
    return kb


@pytest.fixture
def scripted_profiles(db: object) -> Callable[..., tuple[ScriptedBackend, ScriptedBackend]]:
    """Point the teacher and judge profiles at fresh scripted backends; returns them."""
    import uuid

    from raftweb.core.services import profile_spec, profile_update
    from raftweb.llm import get_backend

    def make(
        price_in: float = 0.0, price_out: float = 0.0
    ) -> tuple[ScriptedBackend, ScriptedBackend]:
        out = []
        for role in ("teacher", "judge"):
            profile_update(
                role=role,
                user=None,
                backend="scripted",
                model=f"{role}-{uuid.uuid4().hex[:8]}",
                price_in_per_1k=price_in,
                price_out_per_1k=price_out,
            )
            backend = get_backend(profile_spec(role))
            assert isinstance(backend, ScriptedBackend)
            out.append(backend)
        return out[0], out[1]

    return make


@pytest.fixture
def make_pair(manual_kb: Any) -> Callable[..., Any]:
    """Create a generated-looking pair on the manual KB's first chunk."""
    from corpus.dataset.services import reverify_quotes
    from corpus.models import Chunk, QAPair

    def make(**fields: Any) -> QAPair:
        chunk = Chunk.objects.filter(document__kb=manual_kb).order_by("pk").first()
        other = (
            Chunk.objects.filter(document__kb=manual_kb).exclude(pk=chunk.pk).order_by("pk").first()
        )
        defaults: dict[str, Any] = dict(
            kb=manual_kb,
            oracle_chunk=chunk,
            document=chunk.document,
            question="How do I turn the phone off?",
            cot_answer="It says ##begin_quote##press and hold the Side key and the Volume down key together##end_quote##."
            "\n<ANSWER>: Hold the Side and Volume down keys",
            context_chunk_ids=[other.pk, chunk.pk],
            context_texts=[other.text, chunk.text],
            context_titles=[other.document.name, chunk.document.name],
            oracle_index=1,
            oracle_text=chunk.text,
            judge_score=4,
            judge_reason="fine",
        )
        defaults.update(fields)
        pair = QAPair(**defaults)
        reverify_quotes(pair)
        pair.save()
        return pair

    return make
