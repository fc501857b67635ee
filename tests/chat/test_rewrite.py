from __future__ import annotations

import pytest

from raftweb.llm import get_backend
from raftweb.llm.base import ChatMessage, ModelSpec
from raftweb.llm.registry import forget_backend
from raftweb.raft.rewrite import build_rewrite_messages, clean_rewrite, rewrite_question
from raftweb.testing.scripted_llm import ScriptedLLM, free_port

HISTORY = [
    ChatMessage("user", "How do I reset the TV?"),
    ChatMessage("assistant", "Hold the power button for ten seconds."),
]


def spec_for(base_url: str) -> ModelSpec:
    return ModelSpec(
        backend="openai", model="scripted", base_url=base_url, max_retries=0, timeout_s=5.0,
        extra={"connect_timeout_s": 1.0},
    )  # fmt: skip


@pytest.fixture
def down_backend():
    spec = spec_for(f"http://127.0.0.1:{free_port()}/v1")
    yield get_backend(spec)
    forget_backend(spec)


async def test_it_skips_the_model_for_the_first_message(down_backend) -> None:
    # The backend points at a closed port: any call would come back as an error.
    result = await rewrite_question(down_backend, [], "How do I reset the TV?")
    assert (result.question, result.rewritten, result.error) == (
        "How do I reset the TV?",
        False,
        "",
    )


async def test_it_rewrites_a_follow_up_through_the_model(scripted_llm: ScriptedLLM) -> None:
    spec = spec_for(scripted_llm.base_url)
    try:
        result = await rewrite_question(get_backend(spec), HISTORY, "and how long does it take?")
    finally:
        forget_backend(spec)
    assert result.rewritten
    assert result.question == "and how long does it take? (follow-up to: How do I reset the TV?)"
    assert result.usage.completion_tokens > 0
    [request] = scripted_llm.requests
    assert "Hold the power button" in request["messages"][1]["content"]


async def test_it_falls_back_to_the_question_when_the_model_is_down(down_backend) -> None:
    result = await rewrite_question(down_backend, HISTORY, "how long?")
    assert result.question == "how long?"
    assert not result.rewritten
    assert "unavailable" in result.error


def test_it_shows_recent_turns_and_the_follow_up() -> None:
    long_history = [ChatMessage("user", f"question {i}") for i in range(20)] + HISTORY
    system, user = build_rewrite_messages(long_history, "  how long?  ")
    assert system.role == "system" and "stand-alone" in system.content
    assert "question 0\n" not in user.content
    assert "Assistant: Hold the power button" in user.content
    assert user.content.rstrip().endswith("Latest message: how long?\n\nStand-alone question:")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Stand-alone question: How long does a TV reset take?", "How long does a TV reset take?"),
        ('"How long does a TV reset take?"\nExplanation: ...', "How long does a TV reset take?"),
        ("", "how long?"),
        ("x" * 2000, "how long?"),
    ],
)
def test_it_cleans_the_rewriter_reply(reply: str, expected: str) -> None:
    assert clean_rewrite(reply, "how long?") == expected
