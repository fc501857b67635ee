from __future__ import annotations

from collections.abc import Sequence

import pytest

from raftweb.answering import NO_CONTEXT_ANSWER, Finished, Retrieved, Token, answer, answer_stream
from raftweb.llm import get_backend
from raftweb.llm.base import ChatMessage, ModelSpec
from raftweb.llm.registry import forget_backend
from raftweb.raft.citations import cite
from raftweb.retrieval.types import SearchHit
from raftweb.testing.scripted_llm import ScriptedLLM, free_port

RESET = (
    "To reset the television, hold the power button for ten seconds. "
    "The screen turns off and on again."
)
WARRANTY = "The warranty covers two years of normal use. Water damage is excluded."


def hit(chunk_id: int, text: str, *, doc: str = "manual.pdf", page: int | None = 3) -> SearchHit:
    return SearchHit(
        chunk_id=str(chunk_id),
        document_id=chunk_id * 10,
        document_name=doc,
        page=page,
        text=text,
        score=1.0 / chunk_id,
        start=0,
        end=len(text),
    )


def searcher(hits: Sequence[SearchHit], seen: list[str] | None = None):
    async def search(query: str) -> list[SearchHit]:
        if seen is not None:
            seen.append(query)
        return list(hits)

    return search


def spec_for(base_url: str, **extra: object) -> ModelSpec:
    return ModelSpec(
        backend="openai",
        model="scripted",
        base_url=base_url,
        max_retries=0,
        timeout_s=5.0,
        extra={"connect_timeout_s": 1.0, **extra},
    )


@pytest.fixture
def backend(scripted_llm: ScriptedLLM):
    spec = spec_for(scripted_llm.base_url)
    yield get_backend(spec)
    forget_backend(spec)


async def collect(gen) -> tuple[list[object], Finished]:
    events = [e async for e in gen]
    assert isinstance(events[-1], Finished)
    return events, events[-1]


async def test_it_streams_a_cited_answer(backend) -> None:
    hits = [hit(1, RESET), hit(2, WARRANTY, doc="warranty.md", page=None)]
    events, done = await collect(
        answer_stream(
            question="How do I reset it?", history=[], search=searcher(hits), backend=backend
        )
    )
    tokens = [e for e in events if isinstance(e, Token)]
    assert len(tokens) > 5, "the answer must arrive in several pieces"
    assert isinstance(events[0], Retrieved) and len(events[0].hits) == 2
    result = done.result
    assert result.status == "ok" and result.outcome == "answered"
    assert "".join(t.delta for t in tokens) == result.raw
    assert result.final.startswith("To reset the television")
    [c] = result.citations
    assert (
        c.n == 1 and c.verified and c.chunk_id == "1" and c.document == "manual.pdf" and c.page == 3
    )
    assert RESET[c.start : c.end].lower().startswith("to reset the television")
    assert result.usage.completion_tokens == len(tokens)
    assert result.ttft_s is not None and result.ttft_s < result.latency_s


async def test_it_answers_plainly_when_nothing_is_retrieved(
    backend, scripted_llm: ScriptedLLM
) -> None:
    _, done = await collect(
        answer_stream(question="What is love?", history=[], search=searcher([]), backend=backend)
    )
    assert done.result.outcome == "no_context"
    assert done.result.final == NO_CONTEXT_ANSWER
    assert scripted_llm.requests == [], "no model call without context"


async def test_it_marks_a_refusal(backend, scripted_llm: ScriptedLLM) -> None:
    hits = [hit(1, "REFUSE: unrelated text about cooking pasta.")]
    _, done = await collect(
        answer_stream(
            question="How do I reset it?", history=[], search=searcher(hits), backend=backend
        )
    )
    assert done.result.outcome == "refused"
    assert "does not contain" in done.result.final


async def test_it_marks_quotes_not_found_in_the_chunks(backend, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.answer_override = (
        "##Reason: ##begin_quote## The moon is made of cheese. ##end_quote## "
        "##begin_quote## hold the power button for ten seconds ##end_quote## <ANSWER>: Hold it."
    )
    _, done = await collect(
        answer_stream(question="q", history=[], search=searcher([hit(7, RESET)]), backend=backend)
    )
    first, second = done.result.citations
    assert (first.n, first.verified, first.chunk_id) == (1, False, None)
    assert (second.n, second.verified, second.chunk_id) == (2, True, "7")


async def test_it_reports_a_model_server_that_is_down() -> None:
    spec = spec_for(f"http://127.0.0.1:{free_port()}/v1")
    try:
        _, done = await collect(
            answer_stream(
                question="q",
                history=[],
                search=searcher([hit(1, RESET)]),
                backend=get_backend(spec),
            )
        )
    finally:
        forget_backend(spec)
    assert done.result.status == "error"
    assert done.result.error_kind == "unavailable"
    assert "unavailable" in done.result.error


async def test_it_reports_a_failing_search(backend) -> None:
    async def broken(query: str) -> list[SearchHit]:
        raise ConnectionError("vector store down")

    _, done = await collect(answer_stream(question="q", history=[], search=broken, backend=backend))
    assert (done.result.status, done.result.error_kind) == ("error", "retrieval")
    assert "vector store down" in done.result.error


async def test_it_rewrites_follow_ups_before_searching(backend, scripted_llm: ScriptedLLM) -> None:
    seen: list[str] = []
    history = [
        ChatMessage("user", "How do I reset the TV?"),
        ChatMessage("assistant", "Hold the power button."),
    ]
    events, done = await collect(
        answer_stream(
            question="how long?",
            history=history,
            search=searcher([hit(1, RESET)], seen),
            backend=backend,
            rewrite_backend=backend,
        )
    )
    assert seen == ["how long? (follow-up to: How do I reset the TV?)"]
    assert done.result.search_question == seen[0]
    assert isinstance(events[0], Retrieved) and events[0].rewritten


def test_it_cites_nothing_without_quotes() -> None:
    assert cite([], [hit(1, RESET)]) == []


async def test_it_answers_without_streaming_exactly_as_the_stream_does(backend) -> None:
    """Evaluation uses the non-streaming helper; it must give chat's answer byte for byte."""
    hits = [hit(1, RESET), hit(2, WARRANTY, doc="warranty.md", page=None)]
    _, done = await collect(
        answer_stream(
            question="How do I reset it?", history=[], search=searcher(hits), backend=backend
        )
    )
    result = await answer(question="How do I reset it?", search=searcher(hits), backend=backend)
    streamed = done.result
    assert result.raw == streamed.raw and result.final == streamed.final
    assert [c.as_dict() for c in result.citations] == [c.as_dict() for c in streamed.citations]
    assert result.outcome == streamed.outcome == "answered"
