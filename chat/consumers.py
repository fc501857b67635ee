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
from typing import Any

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import fragments
from chat.models import Conversation, Message
from chat.pipeline import Retrieved, Token
from chat.selectors import conversation_get, conversation_messages, user_can_chat
from chat.services import (
    ChatError,
    Queued,
    Saved,
    TurnEvent,
    answers_expire_stale,
    chat_engine_for,
    chat_turn_run,
    turn_retry_start,
    turn_start,
)

log = logging.getLogger(__name__)

# Answers being generated in this process, by message id, so that a reconnected socket can
# stop an answer its dropped predecessor started.
RUNNING: dict[int, asyncio.Task[Any]] = {}


class ChatConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    task: asyncio.Task[Any] | None = None
    answer_id: int | None = None
    is_open = False

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await sync_to_async(user_can_chat)(user):
            await self.close(code=4403)
            return
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        self.conversation = await sync_to_async(conversation_get)(
            user=user, conversation_id=conversation_id
        )
        if self.conversation is None:
            await self.close(code=4404)
            return
        self.is_open = True
        await answers_expire_stale(conversation=self.conversation)
        # (Re)connecting always restores the whole conversation from the database.
        await self.send_html(await self._history_html() + fragments.render_controls(busy=False))

    async def disconnect(self, code: int) -> None:
        # A running answer is not cancelled: it finishes and is saved, and a reconnecting
        # page picks it up. Only the stop button cancels.
        self.is_open = False

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return
        try:
            data = json.loads(text_data or "{}")
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
        if self._busy():
            await self.send_html(fragments.render_notice("Wait for the answer, or stop it first."))
            return
        try:
            question_msg, answer = await turn_start(conversation=self.conversation, question=question)
        except ChatError as exc:
            await self.send_html(fragments.render_notice(str(exc)))
            return
        await self.send_html(
            fragments.render_turn_start(question_msg, answer)
            + fragments.render_notice("", level="none")
            + fragments.render_controls(busy=True)
        )
        self._start(question_msg, answer)

    async def retry(self, message_id: Any) -> None:
        if self._busy():
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
        await self.send_html(
            fragments.render_message(answer, oob=True) + fragments.render_controls(busy=True)
        )
        self._start(question_msg, answer)

    async def stop(self) -> None:
        task = self.task
        if task is None or task.done():
            # Maybe an answer started by this user's previous (dropped) connection.
            pending = await Message.objects.filter(
                conversation=self.conversation, status=Message.Status.PENDING
            ).values_list("pk", flat=True).alast()
            task = RUNNING.get(pending) if pending is not None else None
        if task is not None and not task.done():
            task.cancel()

    # --- plumbing ------------------------------------------------------------------------

    def _busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def _start(self, question_msg: Message, answer: Message) -> None:
        question_msg.conversation = self.conversation  # type: ignore[assignment]
        self.answer_id = answer.pk
        self.task = asyncio.create_task(self._run(question_msg, answer))
        RUNNING[answer.pk] = self.task
        self.task.add_done_callback(lambda _t, pk=answer.pk: RUNNING.pop(pk, None))

    async def _run(self, question_msg: Message, answer: Message) -> None:
        try:
            engine = await chat_engine_for(kb=await _kb_of(self.conversation))
            await chat_turn_run(answer=answer, question=question_msg, engine=engine, emit=self._emit)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - a broken turn must never kill the socket
            log.exception("chat turn failed for message %s", answer.pk)
            answer.status = Message.Status.ERROR
            answer.error = f"Unexpected error: {exc}"
            await answer.asave(update_fields=["status", "error"])
            await self.send_html(fragments.render_message(answer, oob=True))
        finally:
            await self.send_html(fragments.render_controls(busy=False))

    async def _emit(self, event: TurnEvent) -> None:
        if isinstance(event, Token):
            await self.send_html(fragments.render_token(self.answer_id or 0, event.delta))
        elif isinstance(event, Retrieved):
            n = len(event.hits)
            text = f"Found {n} passage{'s' if n != 1 else ''}; writing the answer…" if n else "Nothing relevant found."
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
                f.message_id: f
                for m in messages
                for f in m.feedback.all()
                if f.user_id == user.pk
            }
            return fragments.render_history(messages, feedback)

        return await sync_to_async(build)()


async def _kb_of(conversation: Conversation | None) -> Any:
    assert conversation is not None
    return await sync_to_async(lambda: conversation.kb)()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0

