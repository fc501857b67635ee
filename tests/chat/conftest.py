from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from raftweb.testing.scripted_llm import ScriptedLLM

MANUAL = (
    "To reset the television, hold the power button for ten seconds. "
    "The screen turns off and on again, and the factory settings are restored.\n\n"
    "Picture settings can be changed in the Settings menu under Picture."
)
WARRANTY = (
    "The warranty covers two years of normal use. Water damage is not covered by the warranty. "
    "Claims are made through the retailer."
)


@pytest.fixture
def student_llm(db: Any, scripted_llm: ScriptedLLM) -> ScriptedLLM:
    """The "student" model profile (the one chat uses) pointed at the scripted server."""
    from raftweb.core.services import profile_update

    profile_update(
        role="student", user=None, backend="openai", model=scripted_llm.model,
        base_url=scripted_llm.base_url, max_concurrency=64, timeout_s=10.0,
    )  # fmt: skip
    return scripted_llm


@pytest.fixture
def make_kb(db: Any) -> Callable[..., Any]:
    """A knowledge base with the given text documents, parsed, chunked and indexed."""
    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload, kb_create

    def make(
        slug: str = "tv", docs: dict[str, str] | None = None, groups: tuple[str, ...] = ()
    ) -> Any:
        kb = kb_create(name=slug.upper(), slug=slug, allowed_groups=groups)
        for name, text in (
            docs if docs is not None else {"manual.txt": MANUAL, "warranty.txt": WARRANTY}
        ).items():
            result = document_upload(kb=kb, name=name, chunks=[text.encode()], enqueue=False)
            document_ingest(document_id=result.document.pk)
        return kb

    return make


@pytest.fixture
def chat_kb(make_kb: Callable[..., Any]) -> Any:
    return make_kb()


@pytest.fixture
def conversation_for(db: Any) -> Callable[[Any, Any], Any]:
    from chat.services import conversation_create

    def make(user: Any, kb: Any) -> Any:
        return conversation_create(owner=user, kb=kb)

    return make


@pytest.fixture
def live_app(transactional_db: Any) -> Iterator[str]:
    """The real ASGI application (HTTP + WebSockets) served by uvicorn on a loopback port,
    against the test database, so clients really go over the network."""
    import uvicorn

    from raftweb.asgi import application

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(application, lifespan="off", log_level="warning", ws="websockets-sansio")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test ASGI server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def ask_sync(transactional_db: Any, student_llm: ScriptedLLM) -> Callable[[Any, str], Any]:
    """Answer a question in a conversation through the real turn service; returns the answer."""
    from asgiref.sync import async_to_sync, sync_to_async

    from chat.selectors import history_for
    from chat.services import chat_turn_run, turn_start

    async def run(conversation: Any, question: str) -> Any:
        async def ignore(event: object) -> None:
            return None

        return await chat_turn_run(
            kb=conversation.kb,
            question=question,
            history=await sync_to_async(history_for)(conversation),
            rows=turn_start(conversation=conversation, question=question),
            emit=ignore,
        )

    def ask(conversation: Any, question: str) -> Any:
        conversation.kb  # noqa: B018 - load the relation here, not inside the event loop
        return async_to_sync(run)(conversation, question)

    return ask
