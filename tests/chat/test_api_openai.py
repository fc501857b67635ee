"""The OpenAI-compatible endpoint, driven by the official ``openai`` client over real HTTP."""

from __future__ import annotations

import openai
import pytest

from raftweb.testing.scripted_llm import free_port

QUESTION = [{"role": "user", "content": "How do I reset the television?"}]


@pytest.fixture
def client_as(live_app: str, api_token_for):
    def make(user, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{live_app}/api/v1", api_key=api_token_for(user), max_retries=0, **kwargs
        )

    return make


def test_it_lists_the_kbs_the_token_may_use(sam, make_kb, client_as) -> None:
    make_kb("tv")
    make_kb("vault", groups=("admin",))
    ids = [m.id for m in client_as(sam).models.list().data]
    assert ids == ["tv"]


def test_it_answers_like_the_chat_with_citations(sam, chat_kb, student_llm, client_as) -> None:
    response = client_as(sam).chat.completions.create(model="tv", messages=QUESTION)
    content = response.choices[0].message.content
    assert "<ANSWER>:" in content and "##begin_quote##" in content
    extra = response.model_extra
    [citation] = extra["citations"]
    assert citation["verified"] and citation["document"] == "manual.txt"
    assert extra["raft"]["final"].startswith("To reset the television")
    assert extra["raft"]["outcome"] == "answered"
    assert response.usage.completion_tokens > 5
    assert response.model == "tv"


def test_it_streams_server_sent_events(sam, chat_kb, student_llm, client_as) -> None:
    stream = client_as(sam).chat.completions.create(
        model="tv", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 5
    text = "".join(pieces)
    assert text.rstrip().endswith("restored.") or "<ANSWER>:" in text
    [last] = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert last.model_extra["citations"][0]["verified"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(pieces)


def test_it_rewrites_follow_ups_from_the_messages(sam, chat_kb, student_llm, client_as) -> None:
    messages = QUESTION + [
        {"role": "assistant", "content": "Hold the power button."},
        {"role": "user", "content": "for how long?"},
    ]
    response = client_as(sam).chat.completions.create(model="tv", messages=messages)
    assert (
        response.model_extra["raft"]["question"]
        == "for how long? (follow-up to: How do I reset the television?)"
    )


def test_it_hides_a_restricted_kb(sam, make_kb, student_llm, client_as) -> None:
    make_kb("vault", groups=("admin",))
    with pytest.raises(openai.NotFoundError) as err:
        client_as(sam).chat.completions.create(model="vault", messages=QUESTION)
    assert err.value.body["code"] == "model_not_found" or "model_not_found" in str(err.value.body)


def test_it_requires_a_valid_token_and_the_chat_role(mallory, chat_kb, live_app, client_as) -> None:
    anonymous = openai.OpenAI(base_url=f"{live_app}/api/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        anonymous.chat.completions.create(model="tv", messages=QUESTION)
    assert err.value.status_code == 401
    with pytest.raises(openai.PermissionDeniedError):
        client_as(mallory).chat.completions.create(model="tv", messages=QUESTION)
    assert client_as(mallory).models.list().data == []


def test_it_reports_a_model_server_that_is_down(sam, chat_kb, student_llm, client_as) -> None:
    from raftweb.core.services import profile_update

    profile_update(role="student", user=None, base_url=f"http://127.0.0.1:{free_port()}/v1")
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as err:
            result = client_as(sam).chat.completions.create(
                model="tv", messages=QUESTION, stream=stream
            )
            if stream:
                list(result)
        assert err.value.status_code == 503
        assert "unavailable" in str(err.value.body)


def test_it_rejects_messages_without_a_question(sam, chat_kb, student_llm, client_as) -> None:
    with pytest.raises(openai.BadRequestError):
        client_as(sam).chat.completions.create(
            model="tv", messages=[{"role": "system", "content": "hi"}]
        )
