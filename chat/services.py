"""Chat business logic: conversations, answering a turn, feedback.

The answering itself is :func:`raftweb.answering.answer_stream`; this module binds it to a
knowledge base (search, model profile) and to the database (messages saved with their
citations, model, latency and tokens, also when a turn is stopped or fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from chat.models import Conversation, Feedback, Message
from chat.selectors import question_for_answer
from corpus.dataset.services import reverify_quotes
from corpus.knowledge.search import RETRIEVERS, retriever_build, retriever_search_async
from corpus.knowledge.splits import kb_document_splits
from corpus.models import Chunk, KnowledgeBase, QAPair
from raftweb.answering import ChatResult, Finished, PipelineEvent, SearchFn, Token, answer_stream
from raftweb.core.memo import Memo, clear_all
from raftweb.core.roles import Role, user_has_role
from raftweb.errors import RaftwebError
from raftweb.llm.base import ChatBackend, ChatMessage
from raftweb.raft.splits import row_split
from raftweb.retrieval import Retriever
from training.serving import ACTIVE, generator_for

log = logging.getLogger(__name__)

CHAT_PROFILE = "student"
TOP_K = 5
TITLE_CHARS = 80
# No answer takes this long; one still pending after it was orphaned by a dead process.
STALE_PENDING = timedelta(minutes=15)


class ChatError(RaftwebError):
    """A chat action that cannot be done; ``str()`` is fit for the user."""


@dataclass(frozen=True, slots=True)
class ChatModel:
    backend: ChatBackend
    profile: str
    model_name: str
    model_version: str


@dataclass(frozen=True, slots=True)
class ChatEngine:
    """What answering for one knowledge base needs: its search and the chat model."""

    search: SearchFn
    model: ChatModel


@dataclass(frozen=True, slots=True)
class Started:
    """The question and the pending answer are stored (always the first event of a turn)."""

    question: Message
    answer: Message


@dataclass(frozen=True, slots=True)
class Queued:
    position: int


@dataclass(frozen=True, slots=True)
class Saved:
    """The answer is stored (ok, error or cancelled); render it from the database row."""

    answer: Message


TurnEvent = PipelineEvent | Started | Queued | Saved
Emit = Callable[[TurnEvent], Awaitable[None]]


# --- conversations -----------------------------------------------------------------------


def conversation_create(*, owner: Any, kb: KnowledgeBase, title: str = "") -> Conversation:
    return Conversation.objects.create(owner=owner, kb=kb, title=title[:TITLE_CHARS])


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def turn_create(*, conversation: Conversation, question: str) -> tuple[Message, Message]:
    """Store the user's question and a pending answer; names an untitled conversation."""
    question = question.strip()
    if not question:
        raise ChatError("Type a question first.")
    now = timezone.now()
    with transaction.atomic():
        # One INSERT for both rows, in this order (ids ascend: the answer follows its question).
        user_msg, answer = Message.objects.bulk_create(
            [
                Message(
                    conversation=conversation,
                    role=Message.Role.USER,
                    content=question,
                    created_at=now,
                ),
                Message(
                    conversation=conversation,
                    role=Message.Role.ASSISTANT,
                    status=Message.Status.PENDING,
                    created_at=now,
                ),
            ]
        )
        fields: dict[str, Any] = {"updated_at": now}
        if not conversation.title:
            conversation.title = " ".join(question.split())[:TITLE_CHARS]
            fields["title"] = conversation.title
        Conversation.objects.filter(pk=conversation.pk).update(**fields)
    return user_msg, answer


async def turn_start(*, conversation: Conversation, question: str) -> tuple[Message, Message]:
    # One hop to the ORM thread for the whole turn opening: under load that thread has a
    # queue, and every separate query would wait in it again.
    return await sync_to_async(turn_create)(conversation=conversation, question=question)


async def turn_retry_start(*, answer: Message) -> Message:
    """Re-arm a failed or stopped answer; returns the question it answers."""
    if answer.role != Message.Role.ASSISTANT or answer.status not in (
        Message.Status.ERROR,
        Message.Status.CANCELLED,
    ):
        raise ChatError("Only a failed or stopped answer can be retried.")
    question = await sync_to_async(question_for_answer)(answer)
    if question is None:
        raise ChatError("This answer has no question to retry.")
    answer.status = Message.Status.PENDING
    answer.error = ""
    await answer.asave(update_fields=["status", "error"])
    return question


async def answers_expire_stale(*, conversation: Conversation) -> int:
    """Mark answers stuck in "pending" (their server process died) as failed, so they can be
    retried instead of spinning forever."""
    cutoff = timezone.now() - STALE_PENDING
    return await Message.objects.filter(
        conversation=conversation, status=Message.Status.PENDING, created_at__lt=cutoff
    ).aupdate(status=Message.Status.ERROR, error="The answer was interrupted (server restart).")


# --- answering ---------------------------------------------------------------------------


@functools.cache
def _search_pool() -> ThreadPoolExecutor:
    # A KB's search set-up (database reads; the first time, a model load) is read off the event
    # loop, in a pool of its own so that it neither waits behind nor blocks the ORM thread.
    # Searches themselves hold no thread: see retriever_search_async.
    return ThreadPoolExecutor(max_workers=settings.SEARCH_THREADS, thread_name_prefix="chat-search")


def _config_ttl_s() -> float:
    return float(settings.CONFIG_TTL_S)


# A knowledge base's chat model by KB id: read once per RAFTWEB_CONFIG_TTL_S, not once per
# question (raftweb/core/memo.py says why); its retriever comes from corpus.knowledge.search's
# memo. chat/apps.py clears both when the rows behind them are saved.
CHAT_MODELS: Memo[int, ChatModel] = Memo(_config_ttl_s, name="chat-models")


def chat_setup_forget(*_args: Any, **_kwargs: Any) -> None:
    """Drop every memoised set-up (a signal receiver, see chat/apps.py).

    Again once the change commits: a question answered in between may have read and kept the
    rows as they were before it."""
    chat_setup_clear()
    transaction.on_commit(chat_setup_clear)


def chat_setup_clear() -> None:
    clear_all()


def _retriever_load(kb_id: int) -> Retriever:
    # Pool threads live long and keep their own connection: drop it when it is too old or
    # broken, as Django does around each request.
    close_old_connections()
    retriever = retriever_build(kb_id)
    retriever.embedder = retriever.embedder.loaded()  # type: ignore[attr-defined]
    return retriever


def kb_searcher(kb: KnowledgeBase) -> SearchFn:
    """Hybrid search of ``kb`` as an async function (lookups in the search thread pool)."""
    kb_id = kb.pk
    load = sync_to_async(_retriever_load, thread_sensitive=False, executor=_search_pool())

    async def search(query: str) -> Sequence[Any]:
        retriever = await RETRIEVERS.aget((kb_id, "active"), lambda: load(kb_id))
        return await retriever_search_async(retriever, query, mode="hybrid", k=TOP_K)

    return search


def _chat_model_load(kb_id: int) -> ChatModel:
    generator = generator_for(KnowledgeBase.objects.get(pk=kb_id), ACTIVE)
    spec = generator.spec
    version = generator.label if generator.version_id else (spec.adapter_path or spec.model)
    return ChatModel(
        backend=generator.backend,
        profile=CHAT_PROFILE,
        model_name=spec.model[-500:],
        model_version=version[-200:],
    )


async def chat_model(kb: KnowledgeBase) -> ChatModel:
    """The model chat answers with for ``kb``: its active generator version when it has one
    (served as :mod:`training.serving` says), else the "student" profile as configured."""
    kb_id = kb.pk
    return await CHAT_MODELS.aget(kb_id, lambda: sync_to_async(_chat_model_load)(kb_id))


async def chat_engine_for(*, kb: KnowledgeBase) -> ChatEngine:
    return ChatEngine(search=kb_searcher(kb), model=await chat_model(kb))


async def chat_turn_run(
    *,
    kb: KnowledgeBase,
    question: str,
    history: Sequence[ChatMessage],
    rows: Awaitable[tuple[Message, Message]],
    emit: Emit,
) -> Message:
    """Answer ``question`` into the pending answer row that ``rows`` yields, emitting events.

    ``rows`` (the stored question and pending answer, see :func:`turn_start`) and the model
    profile are read while the knowledge base is searched: database round trips, which queue
    behind every other conversation's, then add nothing to the time to the first token.
    ``Started`` is always emitted first. The answer row is saved whatever happens: ok, error
    (model or search down) or cancelled (the task was cancelled, e.g. by the stop button)
    with the text generated so far.
    """
    rows_task = asyncio.ensure_future(rows)
    model_task = asyncio.ensure_future(chat_model(kb))
    backend_task = asyncio.ensure_future(_backend_of(model_task))

    async def announce() -> None:
        question_msg, answer_msg = await rows_task
        await emit(Started(question_msg, answer_msg))

    announced = asyncio.ensure_future(announce())

    async def emit_in_order(event: TurnEvent) -> None:
        await announced
        await emit(event)

    async def on_queue(position: int) -> None:
        await emit_in_order(Queued(position))

    parts: list[str] = []
    stream = answer_stream(
        question=question,
        history=history,
        search=kb_searcher(kb),
        backend=backend_task,
        rewrite_backend=backend_task,
        on_queue=on_queue,
    )
    try:
        async with contextlib.aclosing(stream):
            async for event in stream:
                if isinstance(event, Finished):
                    await announced
                    _, answer = await rows_task
                    await _save_result(answer, event.result, await _model_or_none(model_task))
                    await emit(Saved(answer))
                    return answer
                if isinstance(event, Token):
                    parts.append(event.delta)
                await emit_in_order(event)
    except asyncio.CancelledError:
        _, answer = await rows_task
        answer.status = Message.Status.CANCELLED
        answer.content = answer.final = "".join(parts)
        answer.outcome = ""
        _stamp(answer, await _model_or_none(model_task))
        await answer.asave()
        # Tell the (possibly still open) socket before the cancellation goes on.
        with contextlib.suppress(Exception):
            await announced
            await emit(Saved(answer))
        raise
    finally:
        for task in (model_task, backend_task, announced):
            if not task.done():
                task.cancel()
    raise RuntimeError("the answer pipeline ended without a result")


async def _backend_of(model_task: Awaitable[ChatModel]) -> ChatBackend:
    return (await model_task).backend


async def _model_or_none(model_task: asyncio.Future[ChatModel]) -> ChatModel | None:
    try:
        return await model_task
    except Exception:  # noqa: BLE001 - the profile failure is already the answer's error
        return None


async def _save_result(answer: Message, result: ChatResult, model: ChatModel | None) -> None:
    answer.status = result.status
    answer.outcome = result.outcome
    answer.question = result.search_question
    answer.content = result.raw
    answer.final = result.final
    answer.reasoning = result.reasoning
    answer.citations = [c.as_dict() for c in result.citations]
    answer.retrieved = [
        {
            "chunk_id": h.chunk_id,
            "document_id": h.document_id,
            "document": h.document_name,
            "page": h.page,
            "score": h.score,
        }
        for h in result.hits
    ]
    answer.error = await _error_for_owner(answer, result.error) if result.error else ""
    answer.latency_s = result.latency_s
    answer.ttft_s = result.ttft_s
    answer.retrieval_s = result.retrieval_s
    answer.tokens_in = result.usage.prompt_tokens
    answer.tokens_out = result.usage.completion_tokens
    _stamp(answer, model)
    await answer.asave()


SUPPORT_APOLOGY = (
    "Sorry, the assistant is unavailable right now and could not answer this question. "
    "Please try again in a few minutes; if it keeps happening, tell an administrator."
)


def error_text_for(user: Any, text: str) -> str:
    """An error message as ``user`` may see it. Admins get the whole message, which names the
    setting to fix (the log keeps it too); everyone else, who can fix none of it, a plain
    apology with no model-server addresses or profile names."""
    return text if user_has_role(user, Role.ADMIN) else SUPPORT_APOLOGY


async def _error_for_owner(answer: Message, error: str) -> str:
    log.warning("chat answer %s failed: %s", answer.pk, error)

    def for_owner() -> str:
        owner = Conversation.objects.select_related("owner").get(pk=answer.conversation_id).owner
        return error_text_for(owner, error)

    return await sync_to_async(for_owner)()


def _stamp(answer: Message, model: ChatModel | None) -> None:
    if model is not None:
        answer.model_profile = model.profile
        answer.model_name = model.model_name
        answer.model_version = model.model_version


def openai_history(messages: Sequence[dict[str, str]]) -> tuple[str, list[ChatMessage]]:
    """Split OpenAI-style messages into (last user question, earlier user/assistant turns)."""
    turns = [
        ChatMessage(m["role"], str(m.get("content") or ""))  # type: ignore[arg-type]
        for m in messages
        if m.get("role") in ("user", "assistant")
    ]
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        raise ChatError("The last message must be a non-empty user message.")
    return turns[-1].content, turns[:-1]


# --- feedback ----------------------------------------------------------------------------


def feedback_submit(*, message: Message, user: Any, value: str, comment: str = "") -> Feedback:
    if message.role != Message.Role.ASSISTANT or message.status != Message.Status.OK:
        raise ChatError("Feedback can only be given on a finished answer.")
    if value not in Feedback.Value.values:
        raise ChatError("Feedback is either up or down.")
    feedback, _ = Feedback.objects.update_or_create(
        message=message,
        user=user,
        defaults={"value": value, "comment": comment.strip()[:4000], "updated_at": timezone.now()},
    )
    return feedback


def feedback_send_to_review(*, feedback: Feedback, user: Any) -> Feedback:
    """Turn a thumbs-down answer into a candidate Q&A pair that a reviewer corrects.

    The pair keeps the (stand-alone) question, the chunks the model saw as its context, the
    chunk it quoted (if any) as the oracle, and the model's answer to be edited. Sending twice
    creates one pair.
    """
    if feedback.value != Feedback.Value.DOWN:
        raise ChatError("Only a thumbs-down answer can be sent to review.")
    with transaction.atomic():
        locked = (
            Feedback.objects.select_for_update()
            .select_related("message", "message__conversation", "message__conversation__kb")
            .get(pk=feedback.pk)
        )
        if locked.sent_to_review:
            return locked
        pair = qa_pair_from_chat(answer=locked.message, comment=locked.comment, user=user)
        locked.sent_to_review = True
        locked.qa_pair_id = pair.pk
        locked.save(update_fields=["sent_to_review", "qa_pair_id"])
    return locked


def qa_pair_from_chat(*, answer: Message, comment: str = "", user: Any = None) -> Any:
    """A pending ``QAPair`` (source ``chat_feedback``) built from a chat answer."""

    question = answer.question or getattr(question_for_answer(answer), "content", "")
    wanted = [
        int(r["chunk_id"]) for r in answer.retrieved or [] if str(r.get("chunk_id", "")).isdigit()
    ]
    chunks = Chunk.objects.in_bulk(wanted)
    ids = [i for i in wanted if i in chunks]  # chunks deleted since the answer are dropped
    quoted = [
        c["chunk_id"] for c in answer.citations or [] if c.get("verified") and c.get("chunk_id")
    ]
    oracle = chunks.get(int(quoted[0])) if quoted and str(quoted[0]).isdigit() else None
    # A question about an eval document must never become training data: the RAFT rule for a
    # row's split, over every document it shows (documents without a split get theirs now).
    split = row_split(
        {chunks[i].document_id for i in ids}, kb_document_splits(kb=answer.conversation.kb)
    )
    notes = [f"from chat feedback on message {answer.pk}"]
    if comment:
        notes.append(f"user comment: {comment[:500]}")
    pair = QAPair(
        kb=answer.conversation.kb,
        source=QAPair.Source.CHAT_FEEDBACK,
        status=QAPair.Status.PENDING,
        question=question,
        cot_answer=answer.content,
        final_answer=answer.final,
        context_chunk_ids=ids,
        context_texts=[chunks[i].text for i in ids],
        context_titles=[chunks[i].title for i in ids],
        oracle_chunk=oracle,
        document=oracle.document if oracle else None,
        oracle_index=ids.index(oracle.pk) if oracle else None,
        oracle_text=oracle.text if oracle else "",
        split=split,
        notes=notes,
    )
    reverify_quotes(pair)
    pair.save()
    return pair
