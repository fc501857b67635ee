"""The chat WebSocket: moves questions in and answer fragments out, nothing more.

Protocol (JSON in, HTML out; the htmx ws extension sends the form fields as JSON):
``{"action": "ask", "question": "..."}``, ``{"action": "stop"}``,
``{"action": "retry", "message_id": N}``. Out: HTML fragments swapped out-of-band by id.

Close codes: 4401 not logged in, 4403 no chat role, 4404 no such conversation for this user
(someone else's conversation looks exactly like a missing one).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import aclose_old_connections
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import fragments
from chat.models import Conversation, Message
from chat.selectors import (
    conversation_get,
    conversation_messages,
    conversation_usable,
    history_for,
    user_can_chat,
)
from chat.services import (
    SUPPORT_APOLOGY,
    ChatError,
    Queued,
    Saved,
    Started,
    TurnEvent,
    answers_expire_stale,
    chat_turn_run,
    turn_create,
    turn_retry_start,
)
from raftweb.answering import Retrieved, Token
from raftweb.core import text, throttle
from raftweb.core.roles import Role, user_has_role
from raftweb.llm.base import ChatMessage

log = logging.getLogger(__name__)

# Answers being generated in this process, by message id, so that a reconnected socket can
# stop an answer its dropped predecessor started.
RUNNING: dict[int, asyncio.Task[Any]] = {}
# Fire-and-forget tasks, referenced so that they are not garbage-collected mid-way.
_BACKGROUND: set[asyncio.Future[Any]] = set()


class ChatConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    conversation_id: int = 0
    kb: Any = None
    # Earlier turns (questions, final answers) for follow-up rewriting, kept in memory so a
    # new question needs no database read before the search starts.
    history: list[ChatMessage]
    task: asyncio.Task[Any] | None = None
    answer_id: int | None = None
    retrying = False
    is_open = False
    shows_addresses = False  # admins see where a failing server lives; others do not

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await sync_to_async(user_can_chat)(user):
            await self.close(code=4403)
            return
        self.shows_addresses = await sync_to_async(user_has_role)(user, Role.ADMIN)
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        self.conversation = await sync_to_async(conversation_get)(
            user=user, conversation_id=conversation_id
        )
        if self.conversation is None:
            await self.close(code=4404)
            return
        self.is_open = True
        self.conversation_id = conversation_id
        self.kb = await sync_to_async(lambda: self.conversation.kb)()  # type: ignore[union-attr]
        self.history = await sync_to_async(history_for)(self.conversation)
        await answers_expire_stale(conversation=self.conversation)
        # (Re)connecting always restores the whole conversation from the database.
        await self.send_html(await self._history_html() + fragments.render_controls(busy=False))

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Like channels' dispatch, but without waiting for stale-connection cleanup.

        Channels runs ``close_old_connections`` in the one ORM thread before every message;
        under load that thread has a backlog (other conversations' queries), and every
        question would wait for all of it before its search could even start. The cleanup
        still runs, queued on the same thread ahead of this consumer's next query.
        """
        if message.get("type") != "websocket.receive":
            await super().dispatch(message)
            return
        cleanup = asyncio.ensure_future(aclose_old_connections())
        _BACKGROUND.add(cleanup)
        cleanup.add_done_callback(_BACKGROUND.discard)
        await self.websocket_receive(message)

    async def disconnect(self, code: int) -> None:
        # A running answer is not cancelled: it finishes and is saved, and a reconnecting
        # page picks it up. Only the stop button cancels.
        self.is_open = False

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return
        try:
            # Lone surrogates ("\ud800") become U+FFFD here, where the text comes in.
            data = text.loads(text_data or "{}")
        except json.JSONDecodeError:
            return
        action = str(data.get("action") or "ask")
        if action == "stop":
            await self.stop()
        elif action == "retry":
            await self.retry(data.get("message_id"))
        elif action == "ask":
            await self.ask(str(data.get("question") or ""))

    # --- actions -------------------------------------------------------------------------

    async def ask(self, question: str) -> None:
        question = question.strip()
        if not question:
            await self.send_html(fragments.render_notice("Type a question first."))
            return
        limit = settings.MAX_QUESTION_CHARS
        if len(question) > limit:
            await self.send_html(
                fragments.render_notice(
                    f"Your question is {len(question):,} characters long; the limit is "
                    f"{limit:,}. Shorten it and ask again."
                )
            )
            return
        if self._busy():
            await self.send_html(fragments.render_notice("Wait for the answer, or stop it first."))
            return
        # The same per-user budget as the OpenAI-compatible endpoint (RAFTWEB_RATE_CHAT).
        wait = await sync_to_async(throttle.rate_hit, thread_sensitive=False)(
            "chat", throttle.user_ident(self.scope["user"])
        )
        if wait:
            await self.send_html(
                fragments.render_notice(
                    f"Too many questions in a short time; ask again in {throttle.wait_text(wait)}."
                )
            )
            return
        self._start(question, list(self.history), self._turn_rows(question))

    async def retry(self, message_id: Any) -> None:
        if self._busy():
            return
        if not await self._still_allowed():
            await self.close(code=4404)
            return
        answer = await Message.objects.filter(
            pk=_int(message_id), conversation=self.conversation, role=Message.Role.ASSISTANT
        ).afirst()
        if answer is None:
            await self.send_html(fragments.render_notice("That answer no longer exists."))
            return
        try:
            question_msg = await turn_retry_start(answer=answer)
        except ChatError as exc:
            await self.send_html(fragments.render_notice(str(exc)))
            return
        history = await sync_to_async(history_for)(self.conversation, before_id=question_msg.pk)
        self._start(question_msg.content, history, _ready((question_msg, answer)), retry=True)

    async def stop(self) -> None:
        task = self.task
        if task is None or task.done():
            # Maybe an answer started by this user's previous (dropped) connection.
            pending = (
                await Message.objects.filter(
                    conversation=self.conversation, status=Message.Status.PENDING
                )
                .values_list("pk", flat=True)
                .alast()
            )
            task = RUNNING.get(pending) if pending is not None else None
        if task is not None and not task.done():
            task.cancel()

    # --- plumbing ------------------------------------------------------------------------

    async def _still_allowed(self) -> bool:
        """Access is re-checked per question: a role or a KB restriction can change while a
        socket stays open."""

        return await sync_to_async(conversation_usable)(
            user_id=self.scope["user"].pk, conversation_id=self.conversation_id
        )

    async def _turn_rows(self, question: str) -> tuple[Message, Message]:
        # Runs beside the search (see chat_turn_run); nothing is shown or generated before
        # it has passed. Check and writes are one job for the ORM thread (see turn_start).
        def open_turn() -> tuple[Message, Message]:
            # Fresh rows, not the socket's user object (its roles are cached on it).
            if not conversation_usable(
                user_id=self.scope["user"].pk, conversation_id=self.conversation_id
            ):
                raise ConversationGone
            return turn_create(conversation=self.conversation, question=question)  # type: ignore[arg-type]

        return await sync_to_async(open_turn)()

    def _busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def _start(
        self,
        question: str,
        history: list[ChatMessage],
        rows: Awaitable[tuple[Message, Message]],
        *,
        retry: bool = False,
    ) -> None:
        self.answer_id = None
        self.retrying = retry
        self.task = asyncio.create_task(self._run(question, history, rows))

    async def _run(
        self, question: str, history: list[ChatMessage], rows: Awaitable[tuple[Message, Message]]
    ) -> None:
        try:
            answer = await chat_turn_run(
                kb=self.kb, question=question, history=history, rows=rows, emit=self._emit
            )
            if answer.status == Message.Status.OK and not self.retrying:
                self.history += [
                    ChatMessage("user", question),
                    ChatMessage("assistant", answer.final),
                ]
        except asyncio.CancelledError:
            pass
        except ConversationGone:
            self.is_open = False
            await self.close(code=4404)
        except Exception as exc:  # noqa: BLE001 - a broken turn must never kill the socket
            log.exception("chat turn failed in conversation %s", self.conversation_id)
            error = f"Unexpected error: {exc}" if self.shows_addresses else SUPPORT_APOLOGY
            if self.answer_id is not None:
                await Message.objects.filter(pk=self.answer_id).aupdate(
                    status=Message.Status.ERROR, error=error
                )
                answer = await Message.objects.aget(pk=self.answer_id)
                await self.send_html(fragments.render_message(answer, oob=True))
            else:
                await self.send_html(fragments.render_notice(error))
        finally:
            if self.answer_id is not None:
                RUNNING.pop(self.answer_id, None)
            await self.send_html(fragments.render_controls(busy=False))

    async def _emit(self, event: TurnEvent) -> None:
        if isinstance(event, Token):
            await self.send_html(fragments.render_token(self.answer_id or 0, event.delta))
        elif isinstance(event, Started):
            self.answer_id = event.answer.pk
            if self.task is not None:
                RUNNING[event.answer.pk] = self.task
            if self.retrying:
                head = fragments.render_message(event.answer, oob=True)
            else:
                head = fragments.render_turn_start(event.question, event.answer)
                conversation = self.conversation
                assert conversation is not None
                head += fragments.render_title(conversation.title, conversation.pk)
            await self.send_html(
                head
                + fragments.render_notice("", level="none")
                + fragments.render_controls(busy=True)
            )
        elif isinstance(event, Retrieved):
            n = len(event.hits)
            text = (
                f"Found {n} passage{'s' if n != 1 else ''}; writing the answer…"
                if n
                else "Nothing relevant found."
            )
            await self.send_html(fragments.render_status(self.answer_id or 0, text))
        elif isinstance(event, Queued):
            await self.send_html(
                fragments.render_status(
                    self.answer_id or 0,
                    f"Waiting for the model: position {event.position} in the queue…",
                )
            )
        elif isinstance(event, Saved):
            await self.send_html(fragments.render_message(event.answer, oob=True))

    async def send_html(self, html: str) -> None:
        # The socket may be gone while an answer is still being generated and saved.
        if self.is_open:
            try:
                await self.send(text_data=html)
            except Exception:  # noqa: BLE001 - closed under our feet
                self.is_open = False

    async def _history_html(self) -> str:
        def build() -> str:
            messages = conversation_messages(self.conversation)  # type: ignore[arg-type]
            user = self.scope["user"]
            feedback = {
                f.message_id: f for m in messages for f in m.feedback.all() if f.user_id == user.pk
            }
            return fragments.render_history(messages, feedback)

        return await sync_to_async(build)()


class ConversationGone(Exception):
    """The user may no longer use this conversation (role or KB access changed)."""


async def _ready(value: Any) -> Any:
    return value


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
