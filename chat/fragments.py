"""HTML fragments for the chat page and its WebSocket (htmx out-of-band swaps).

Each WebSocket message is HTML whose top-level elements carry an ``id``; the htmx ws extension
swaps each into the element with the same id (``hx-swap-oob``). Tokens are appended as
escaped text, so a streaming answer is never parsed as markup before it is sanitised.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from django.template.loader import render_to_string
from django.urls import reverse

from chat.models import Feedback, Message
from chat.rendering import render_with_citations
from raftweb.answering import NO_CONTEXT_ANSWER, REFUSAL_NOTE
from raftweb.raft.citations import Citation

# The RAFT reference's answers open their reasoning with "##Reason:"; a label, not content.
_REASON_TAG_RE = re.compile(r"^\s*##\s*Reason\s*:\s*", re.IGNORECASE)

OUTCOME_NOTES = {
    Message.Outcome.NO_CONTEXT: "Nothing relevant was found in the knowledge base.",
    Message.Outcome.REFUSED: REFUSAL_NOTE,
    Message.Outcome.UNPARSED: (
        "The model did not answer in the expected format; its output is shown as written."
    ),
}


def source_url(message_id: int, citation: Citation) -> str:
    if citation.chunk_id is None:
        return ""
    return f"{reverse('chat:source', args=[citation.chunk_id])}?m={message_id}&n={citation.n}"


def message_context(message: Message, *, feedback: Feedback | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"message": message, "feedback": feedback}
    if message.role != Message.Role.ASSISTANT or message.status in (
        Message.Status.PENDING,
        Message.Status.ERROR,
    ):
        return ctx
    citations = [Citation.from_dict(c) for c in message.citation_list()]

    def href(c: Citation) -> str:
        return source_url(message.pk, c)

    final = message.final if message.outcome != Message.Outcome.NO_CONTEXT else NO_CONTEXT_ANSWER
    ctx.update(
        final_html=render_with_citations(final, citations, href_for=href),
        reasoning_html=render_with_citations(
            _REASON_TAG_RE.sub("", message.reasoning), citations, href_for=href
        )
        if message.reasoning
        else "",
        citations=[{"c": c, "href": href(c)} for c in citations],
        note=OUTCOME_NOTES.get(message.outcome, ""),
    )
    return ctx


def render_message(
    message: Message, *, feedback: Feedback | None = None, oob: bool = False, poll: bool = False
) -> str:
    ctx = message_context(message, feedback=feedback)
    ctx.update(oob=oob, poll=poll)
    return render_to_string("chat/partials/message.html", ctx)


def render_history(messages: list[Message], feedback_by_message: dict[int, Feedback]) -> str:
    """The whole conversation, replacing ``#chat-messages`` (sent on every (re)connect)."""
    inner = "".join(
        render_message(
            m,
            feedback=feedback_by_message.get(m.pk),
            # A pending answer at (re)connect time belongs to an earlier connection (one
            # that dropped); it is polled over HTTP until it is saved.
            poll=m.status == Message.Status.PENDING,
        )
        for m in messages
    )
    empty = "" if messages else render_to_string("chat/partials/empty.html")
    return f'<div id="chat-messages" hx-swap-oob="innerHTML">{inner}{empty}</div>'


def render_turn_start(question: Message, answer: Message) -> str:
    inner = render_message(question) + render_message(answer)
    return (
        f'<div id="chat-messages" hx-swap-oob="beforeend">{inner}</div>'
        '<div id="chat-empty" hx-swap-oob="delete"></div>'
    )


def render_token(answer_id: int, delta: str) -> str:
    # Hot path (one call per token): a plain f-string, no template.
    text = escape(delta, quote=False)
    return f'<span id="answer-{answer_id}-stream" hx-swap-oob="beforeend">{text}</span>'


def render_status(answer_id: int, text: str) -> str:
    return (
        f'<div id="answer-{answer_id}-status" class="answer-status" hx-swap-oob="true">'
        f"{escape(text)}</div>"
    )


def render_title(title: str, conversation_id: int | None = None) -> str:
    """The page heading and, when given the conversation, its entry in the sidebar list: a
    new conversation is named after its first question."""
    html = f'<h1 id="chat-title" hx-swap-oob="true">{escape(title or "New conversation")}</h1>'
    if conversation_id is not None:
        html += (
            f'<span id="conversation-{int(conversation_id)}-title" hx-swap-oob="true">'
            f"{escape(title or 'Untitled')}</span>"
        )
    return html


def render_controls(*, busy: bool, connected: bool = True) -> str:
    return render_to_string("chat/partials/controls.html", {"busy": busy, "connected": connected})


def render_notice(text: str, *, level: str = "error") -> str:
    return (
        f'<div id="chat-notice" class="chat-notice chat-notice-{escape(level)}" role="alert" '
        f'hx-swap-oob="true">{escape(text)}</div>'
    )
