from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from chat.models import Message
from raftweb.asgi import application
from raftweb.testing.scripted_llm import free_port

pytestmark = pytest.mark.django_db(transaction=True)

FINAL_RE = re.compile(r'id="msg-(\d+)"[^>]*data-status="(ok|error|cancelled)"')


def session_cookie(client_for: Callable[[Any], Any], user: Any) -> str:
    return client_for(user).cookies["sessionid"].value


@asynccontextmanager
async def socket_for(
    conversation_id: int, cookie: str | None, origin: str = "http://127.0.0.1"
) -> AsyncIterator[WebsocketCommunicator]:
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1")]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/chat/{conversation_id}/", headers=headers)
    try:
        yield comm
    finally:
        await comm.disconnect()


async def until(comm: WebsocketCommunicator, pattern: str, timeout: float = 15) -> list[str]:
    """Frames received until one matches ``pattern`` (regex); returns them all."""
    frames: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await comm.receive_from(timeout=max(0.1, deadline - loop.time()))
        frames.append(frame)
        if re.search(pattern, frame):
            return frames


def tokens_in(frames: list[str]) -> list[str]:
    return [
        f for f in frames if re.match(r'<span id="answer-\d+-stream" hx-swap-oob="beforeend">', f)
    ]


async def ask(comm: WebsocketCommunicator, question: str) -> list[str]:
    await comm.send_to(text_data=json.dumps({"action": "ask", "question": question, "HEADERS": {}}))
    return await until(comm, FINAL_RE.pattern)


async def answers() -> list[Message]:
    return [m async for m in Message.objects.filter(role="assistant").order_by("id")]


async def test_it_streams_a_cited_answer_and_stores_it(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        connected, _ = await comm.connect()
        assert connected
        restore = await comm.receive_from()
        assert 'id="chat-messages"' in restore
        frames = await ask(comm, "How do I reset the television?")
    assert len(tokens_in(frames)) > 5, "text must arrive in several pieces"
    final = frames[-1]
    assert 'data-status="ok"' in final
    assert "To reset the television" in final
    assert 'class="cite cite-verified"' in final
    [answer] = await answers()
    assert answer.status == "ok" and answer.outcome == "answered"
    [citation] = answer.citations
    assert citation["verified"] and citation["document"] == "manual.txt"
    assert f"/chat/source/{citation['chunk_id']}/?m={answer.pk}&amp;n=1" in final
    assert answer.model_profile == "student" and answer.model_name == "scripted"
    assert answer.tokens_out == len(tokens_in(frames))
    assert answer.latency_s and answer.latency_s > 0
    assert [r["document"] for r in answer.retrieved][0] == "manual.txt"
    await sync_to_async(conv.refresh_from_db)()
    assert conv.title == "How do I reset the television?"
    # The sidebar entry is renamed in place, not only the heading.
    sidebar = f'id="conversation-{conv.pk}-title" hx-swap-oob="true">{conv.title}</span>'
    assert any(sidebar in frame for frame in frames)


async def test_it_rewrites_a_follow_up_with_the_conversation(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        await comm.connect()
        await comm.receive_from()
        await ask(comm, "How do I reset the television?")
        await ask(comm, "and how long?")
    _, second = await answers()
    assert second.question == "and how long? (follow-up to: How do I reset the television?)"


@pytest.mark.parametrize("who", ["other_support", "alice"])
async def test_it_hides_a_conversation_from_everyone_but_its_owner(
    who, sam, alice, chat_kb, student_llm, client_for, conversation_for, django_user_model
) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    if who == "alice":
        intruder = alice
    else:
        from raftweb.core.services import user_create

        intruder, _ = await sync_to_async(user_create)(
            username="susan", role="support", password="pw-susan"
        )
    async with socket_for(
        conv.pk, await sync_to_async(session_cookie)(client_for, intruder)
    ) as comm:
        await comm.connect()
        closed = await comm.receive_output()
        assert closed == {"type": "websocket.close", "code": 4404}
    # A missing conversation looks the same.
    async with socket_for(
        conv.pk + 1000, await sync_to_async(session_cookie)(client_for, sam)
    ) as comm:
        await comm.connect()
        assert (await comm.receive_output())["code"] == 4404


async def test_it_refuses_anonymous_users_and_users_without_the_role(
    sam, mallory, chat_kb, client_for, conversation_for
) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    async with socket_for(conv.pk, None) as comm:
        await comm.connect()
        assert (await comm.receive_output())["code"] == 4401
    async with socket_for(
        conv.pk, await sync_to_async(session_cookie)(client_for, mallory)
    ) as comm:
        await comm.connect()
        assert (await comm.receive_output())["code"] == 4403


async def test_it_rejects_a_foreign_origin(sam, chat_kb, client_for, conversation_for) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    cookie = await sync_to_async(session_cookie)(client_for, sam)
    async with socket_for(conv.pk, cookie, origin="https://evil.example") as comm:
        connected, _ = await comm.connect()
        assert not connected


async def test_it_closes_a_conversation_whose_kb_became_restricted(
    sam, make_kb, student_llm, client_for, conversation_for
) -> None:
    from django.contrib.auth.models import Group

    from corpus.knowledge.services import kb_update

    kb = await sync_to_async(make_kb)("secret")
    conv = await sync_to_async(conversation_for)(sam, kb)
    group = await Group.objects.acreate(name="vip")
    await sync_to_async(kb_update)(kb=kb, allowed_groups=[group])
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        await comm.connect()
        assert (await comm.receive_output())["code"] == 4404


async def test_it_shows_an_inline_error_and_retries_when_the_model_server_is_down(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    from raftweb.core.services import profile_update

    await sync_to_async(profile_update)(
        role="student", user=None, base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        await comm.connect()
        await comm.receive_from()
        frames = await ask(comm, "How do I reset the television?")
        final = frames[-1]
        assert 'data-status="error"' in final
        assert "unavailable" in final
        match = re.search(r'data-retry="(\d+)"', final)
        assert match, "the error offers a retry button"
        # The server comes back; retry answers into the same message.
        await sync_to_async(profile_update)(
            role="student", user=None, base_url=student_llm.base_url
        )
        await comm.send_to(
            text_data=json.dumps({"action": "retry", "message_id": int(match.group(1))})
        )
        frames = await until(comm, FINAL_RE.pattern)
        assert 'data-status="ok"' in frames[-1]
    [answer] = await answers()
    assert answer.status == "ok" and answer.pk == int(match.group(1))


async def test_it_stops_a_generation_and_keeps_the_partial_answer(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    student_llm.token_delay_s = 0.03
    student_llm.answer_override = (
        "##Reason: " + " ".join(f"word{i}" for i in range(300)) + " <ANSWER>: x"
    )
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        await comm.connect()
        await comm.receive_from()
        await comm.send_to(text_data=json.dumps({"action": "ask", "question": "reset?"}))
        await until(comm, r"word3\b")
        await comm.send_to(text_data=json.dumps({"action": "stop"}))
        frames = await until(comm, FINAL_RE.pattern)
        assert 'data-status="cancelled"' in frames[-1]
        assert "Answer again" in frames[-1]
        await until(comm, r'data-busy="0"')
    [answer] = await answers()
    assert answer.status == "cancelled"
    assert answer.content.startswith("##Reason: word0 word1 word2 word3")
    assert "word299" not in answer.content
    await asyncio.sleep(0.2)
    assert student_llm.active_streams == 0, "the model stream is closed too"


async def test_it_restores_the_conversation_on_reconnect(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    cookie = await sync_to_async(session_cookie)(client_for, sam)
    async with socket_for(conv.pk, cookie) as comm:
        await comm.connect()
        await comm.receive_from()
        await ask(comm, "How do I reset the television?")
    async with socket_for(conv.pk, cookie) as comm:
        await comm.connect()
        restored = await comm.receive_from()
    assert "How do I reset the television?" in restored
    assert 'data-status="ok"' in restored
    assert 'class="cite-link"' in restored


async def test_it_never_lets_documents_or_model_output_inject_markup(
    sam, make_kb, student_llm, client_for, conversation_for
) -> None:
    kb = await sync_to_async(make_kb)(
        "hostile",
        {
            "evil.txt": "Reset <script>alert(1)</script> the set by "
            "<img src=x onerror=alert(2)> holding power."
        },
    )
    student_llm.answer_override = (
        "##Reason: ##begin_quote## Reset <script>alert(1)</script> the set ##end_quote## "
        "and <iframe src=javascript:alert(3)></iframe> [x](javascript:alert(4)) "
        "<ANSWER>: <img src=x onerror=alert(5)> hold power"
    )
    conv = await sync_to_async(conversation_for)(sam, kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        await comm.connect()
        await comm.receive_from()
        frames = await ask(comm, "reset?")
    for frame in frames:
        lowered = frame.lower()
        assert "<script" not in lowered and "<iframe" not in lowered and "<img" not in lowered
        assert not re.search(r"<[^>]+\son\w+=", lowered)
        assert 'href="javascript:' not in lowered
    assert "&lt;script&gt;" in frames[-1]
    [answer] = await answers()
    assert answer.citations[0]["verified"], "the hostile quote is still checked against the text"


async def test_it_shows_the_queue_position_when_the_model_is_busy(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    from raftweb.core.services import profile_update

    # One generation at a time, like the in-process hf backend.
    await sync_to_async(profile_update)(role="student", user=None, max_concurrency=1)
    student_llm.token_delay_s = 0.02
    first = await sync_to_async(conversation_for)(sam, chat_kb)
    second = await sync_to_async(conversation_for)(sam, chat_kb)
    cookie = await sync_to_async(session_cookie)(client_for, sam)
    async with socket_for(first.pk, cookie) as a, socket_for(second.pk, cookie) as b:
        await a.connect()
        await b.connect()
        await a.receive_from()
        await b.receive_from()
        await a.send_to(
            text_data=json.dumps({"action": "ask", "question": "How do I reset the television?"})
        )
        await until(a, r"-stream\" hx-swap-oob=\"beforeend\"")
        await b.send_to(
            text_data=json.dumps({"action": "ask", "question": "What does the warranty cover?"})
        )
        frames_b = await until(b, r"position 1 in the queue")
        assert "Waiting for the model" in frames_b[-1]
        await until(a, FINAL_RE.pattern)
        frames_b = await until(b, FINAL_RE.pattern)
        assert 'data-status="ok"' in frames_b[-1]


async def test_it_answers_plainly_when_nothing_relevant_is_found(
    sam, make_kb, student_llm, client_for, conversation_for
) -> None:
    kb = await sync_to_async(make_kb)("empty", {})
    conv = await sync_to_async(conversation_for)(sam, kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        await comm.connect()
        await comm.receive_from()
        frames = await ask(comm, "How do I reset the television?")
    assert "Nothing relevant was found" in frames[-1]
    [answer] = await answers()
    assert answer.outcome == "no_context" and student_llm.requests == []


async def test_it_rechecks_access_on_every_question(
    sam, make_kb, student_llm, client_for, conversation_for
) -> None:
    from django.contrib.auth.models import Group

    from corpus.knowledge.services import kb_update

    kb = await sync_to_async(make_kb)("secret")
    conv = await sync_to_async(conversation_for)(sam, kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        assert (await comm.connect())[0]
        await comm.receive_from()
        group = await Group.objects.acreate(name="vip")
        await sync_to_async(kb_update)(kb=kb, allowed_groups=[group])
        await comm.send_to(text_data=json.dumps({"action": "ask", "question": "reset?"}))
        closed = await comm.receive_output(timeout=10)
        assert closed == {"type": "websocket.close", "code": 4404}
    assert student_llm.requests == [], "nothing was generated for the restricted KB"
    assert not await Message.objects.filter(conversation=conv).aexists()


@pytest.mark.slow
async def test_it_queues_behind_the_in_process_model_and_survives_gibberish(
    sam, chat_kb, client_for, conversation_for, tiny_model_dir
) -> None:
    """The real ``hf`` backend (tiny random model): one generation at a time, the second
    conversation sees its queue position; random output is shown as written, nothing breaks."""
    from raftweb.core.services import profile_update

    await sync_to_async(profile_update)(
        role="student", user=None, backend="hf", model=str(tiny_model_dir), base_url=""
    )
    first = await sync_to_async(conversation_for)(sam, chat_kb)
    second = await sync_to_async(conversation_for)(sam, chat_kb)
    cookie = await sync_to_async(session_cookie)(client_for, sam)
    async with socket_for(first.pk, cookie) as a, socket_for(second.pk, cookie) as b:
        await a.connect()
        await b.connect()
        await a.receive_from()
        await b.receive_from()
        question = {"action": "ask", "question": "How do I reset the television?"}
        await a.send_to(text_data=json.dumps(question))
        await until(a, r"-stream\" hx-swap-oob=\"beforeend\"", timeout=60)
        await b.send_to(text_data=json.dumps(question))
        await until(b, r"position 1 in the queue", timeout=30)
        frames_a = await until(a, FINAL_RE.pattern, timeout=120)
        frames_b = await until(b, FINAL_RE.pattern, timeout=120)
    assert 'data-status="ok"' in frames_a[-1] and 'data-status="ok"' in frames_b[-1]
    stored = await answers()
    assert [m.outcome for m in stored] == ["unparsed", "unparsed"]
    assert all(m.tokens_out > 0 and m.model_name == str(tiny_model_dir) for m in stored)


async def test_it_finishes_an_answer_whose_socket_dropped_and_shows_it_on_reconnect(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    student_llm.token_delay_s = 0.01
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    cookie = await sync_to_async(session_cookie)(client_for, sam)
    async with socket_for(conv.pk, cookie) as comm:
        await comm.connect()
        await comm.receive_from()
        await comm.send_to(text_data=json.dumps({"action": "ask", "question": "reset?"}))
        await until(comm, r"-stream\" hx-swap-oob=\"beforeend\"")
    # The page reconnects while the answer is still being written: it is shown as pending
    # and polled over HTTP until it is saved.
    async with socket_for(conv.pk, cookie) as comm:
        await comm.connect()
        restored = await comm.receive_from()
        assert 'data-status="pending"' in restored and 'hx-trigger="every 1s"' in restored
    for _ in range(100):
        [answer] = await answers()
        if answer.status != "pending":
            break
        await asyncio.sleep(0.05)
    assert answer.status == "ok" and answer.final.startswith("To reset the television")


async def test_it_stops_from_a_new_socket_an_answer_started_by_a_dropped_one(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    student_llm.token_delay_s = 0.03
    student_llm.answer_override = (
        "##Reason: " + " ".join(f"w{i}" for i in range(300)) + " <ANSWER>: x"
    )
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    cookie = await sync_to_async(session_cookie)(client_for, sam)
    async with socket_for(conv.pk, cookie) as comm:
        await comm.connect()
        await comm.receive_from()
        await comm.send_to(text_data=json.dumps({"action": "ask", "question": "reset?"}))
        await until(comm, r"w2\b")
    async with socket_for(conv.pk, cookie) as comm:
        await comm.connect()
        await comm.receive_from()
        await comm.send_to(text_data=json.dumps({"action": "stop"}))
        for _ in range(100):
            [answer] = await answers()
            if answer.status != "pending":
                break
            await asyncio.sleep(0.05)
    assert answer.status == "cancelled"
    assert "w299" not in answer.content


async def test_it_closes_the_socket_when_the_user_loses_the_chat_role(
    sam, chat_kb, student_llm, client_for, conversation_for
) -> None:
    conv = await sync_to_async(conversation_for)(sam, chat_kb)
    async with socket_for(conv.pk, await sync_to_async(session_cookie)(client_for, sam)) as comm:
        assert (await comm.connect())[0]
        await comm.receive_from()
        await sync_to_async(sam.groups.clear)()
        await comm.send_to(text_data=json.dumps({"action": "ask", "question": "reset?"}))
        assert (await comm.receive_output(timeout=10))["code"] == 4404
    assert student_llm.requests == []
