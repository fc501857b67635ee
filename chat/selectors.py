"""Reads for the chat: what a user may see, conversations, history."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from chat.models import Conversation, Feedback, Message
from corpus.knowledge.selectors import kb_visible, kbs_visible_to
from corpus.models import Chunk, KnowledgeBase
from raftweb.core.roles import Role, roles_allow, roles_of, user_has_role
from raftweb.llm.base import ChatMessage

CHAT_ROLES = (Role.SUPPORT, Role.ADMIN)
# Earlier turns handed to the follow-up rewriter / OpenAI endpoint.
HISTORY_TURNS = 8


def user_can_chat(user: Any) -> bool:
    return user_has_role(user, *CHAT_ROLES)


def chat_kbs_for(user: Any) -> QuerySet[KnowledgeBase]:
    """Knowledge bases the user may chat with (role check + the KB's group restriction)."""
    if not user_can_chat(user):
        return KnowledgeBase.objects.none()
    return kbs_visible_to(user)


def chat_kb_get(*, user: Any, slug: str) -> KnowledgeBase | None:
    return chat_kbs_for(user).filter(slug=slug).first()


def conversations_for(*, user: Any, kb: KnowledgeBase | None = None) -> QuerySet[Conversation]:
    qs = Conversation.objects.filter(owner=user, kb__in=chat_kbs_for(user)).select_related("kb")
    return qs.filter(kb=kb) if kb is not None else qs


def conversation_get(*, user: Any, conversation_id: int) -> Conversation | None:
    """The conversation if ``user`` owns it and may still use its KB; otherwise None (→ 404).

    Someone else's conversation and a missing one look the same, so ids leak nothing.
    """
    return conversations_for(user=user).filter(pk=conversation_id).first()


def conversation_usable(*, user_id: int, conversation_id: int) -> bool:
    """Whether :func:`conversation_get` would find the conversation for a fresh copy of the
    user: the same rules (active, a chat role, owner, KB visible) in two small queries instead
    of the six that a user load and ``conversation_get`` take. A chat turn asks this before
    every answer, on the ORM thread that all conversations share."""
    user_rows = list(
        get_user_model()
        .objects.filter(pk=user_id, is_active=True)
        .values_list("is_superuser", "groups__id", "groups__name")
    )
    if not user_rows:
        return False
    superuser = user_rows[0][0]
    roles = roles_of(is_superuser=superuser, group_names=[n for _, _, n in user_rows if n])
    if not roles_allow(roles, superuser, *CHAT_ROLES):
        return False
    kb_groups = list(
        Conversation.objects.filter(pk=conversation_id, owner_id=user_id).values_list(
            "kb__allowed_groups", flat=True
        )
    )
    if not kb_groups:  # no such conversation of this user
        return False
    return kb_visible(
        admin=roles_allow(roles, superuser, Role.ADMIN),
        user_group_ids={g for _, g, _ in user_rows if g is not None},
        kb_group_ids={g for g in kb_groups if g is not None},
    )


def conversation_messages(conversation: Conversation) -> list[Message]:
    return list(conversation.messages.prefetch_related("feedback").order_by("created_at", "id"))


def history_for(conversation: Conversation, *, before_id: int | None = None) -> list[ChatMessage]:
    """Earlier turns as the model sees them: questions and *final* answers only."""
    qs = conversation.messages.filter(status=Message.Status.OK)
    if before_id is not None:
        qs = qs.filter(id__lt=before_id)
    rows = list(qs.order_by("-created_at", "-id")[:HISTORY_TURNS])
    rows.reverse()
    out: list[ChatMessage] = []
    for m in rows:
        if m.role == Message.Role.USER:
            out.append(ChatMessage("user", m.content))
        elif m.final:
            out.append(ChatMessage("assistant", m.final))
    return out


def message_get_for_owner(*, user: Any, message_id: int) -> Message | None:
    return (
        Message.objects.filter(
            pk=message_id,
            conversation__owner=user,
            conversation__kb__in=chat_kbs_for(user),
        )
        .select_related("conversation", "conversation__kb")
        .first()
    )


def question_for_answer(answer: Message) -> Message | None:
    """The user message an assistant message answers (the latest one before it)."""
    return (
        answer.conversation.messages.filter(role=Message.Role.USER, id__lt=answer.id)
        .order_by("-id")
        .first()
    )


def source_chunk_get(*, user: Any, chunk_id: int) -> Chunk | None:
    """A chunk the user may read through the chat (its KB must be one they can chat with)."""
    return (
        Chunk.objects.filter(pk=chunk_id, document__kb__in=chat_kbs_for(user))
        .select_related("document", "document__kb")
        .first()
    )


def feedback_list(*, value: str | None = None) -> QuerySet[Feedback]:
    qs = Feedback.objects.select_related(
        "user", "message", "message__conversation", "message__conversation__kb"
    )
    return qs.filter(value=value) if value else qs
