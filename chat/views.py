"""Chat pages: KB picker, conversations, the chat page, sources, feedback.

Views are thin: check access through selectors (a conversation that is not yours is a 404,
never a 403, so ids leak nothing), call a service, render.
"""

from __future__ import annotations

from html import escape

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from chat import fragments, selectors, services
from chat.models import Feedback, Message
from chat.rendering import highlight_spans
from raftweb.core.roles import Role, role_required
from raftweb.raft.citations import Citation

CHAT_ROLES = (Role.SUPPORT, Role.ADMIN)


@require_GET
@role_required(*CHAT_ROLES)
def home(request: HttpRequest) -> HttpResponse:
    kbs = list(selectors.chat_kbs_for(request.user).order_by("name"))
    recent = list(selectors.conversations_for(user=request.user)[:20])
    return render(request, "chat/home.html", {"kbs": kbs, "recent": recent})


@require_GET
@role_required(*CHAT_ROLES)
def kb_chat(request: HttpRequest, slug: str) -> HttpResponse:
    """A KB's chat: its conversations, and a start button."""
    kb = selectors.chat_kb_get(user=request.user, slug=slug)
    if kb is None:
        raise Http404
    conversations = list(selectors.conversations_for(user=request.user, kb=kb)[:100])
    return render(request, "chat/kb.html", {"kb": kb, "conversations": conversations})


@require_POST
@role_required(*CHAT_ROLES)
def conversation_new(request: HttpRequest, slug: str) -> HttpResponse:
    kb = selectors.chat_kb_get(user=request.user, slug=slug)
    if kb is None:
        raise Http404
    conversation = services.conversation_create(owner=request.user, kb=kb)
    return redirect("chat:conversation", conversation.pk)


@require_GET
@role_required(*CHAT_ROLES)
def conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conv = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
    if conv is None:
        raise Http404
    msgs = selectors.conversation_messages(conv)
    feedback = {
        f.message_id: f for m in msgs for f in m.feedback.all() if f.user_id == request.user.pk
    }
    items = [
        fragments.render_message(
            m, feedback=feedback.get(m.pk), poll=m.status == Message.Status.PENDING
        )
        for m in msgs
    ]
    others = list(selectors.conversations_for(user=request.user, kb=conv.kb)[:50])
    return render(
        request,
        "chat/conversation.html",
        {"conversation": conv, "kb": conv.kb, "items": items, "conversations": others},
    )


@require_POST
@role_required(*CHAT_ROLES)
def conversation_delete(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conv = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
    if conv is None:
        raise Http404
    slug = conv.kb.slug
    services.conversation_delete(conversation=conv)
    messages.success(request, "Conversation deleted.")
    return redirect("chat:kb", slug)


@require_GET
@role_required(*CHAT_ROLES)
def message_fragment(request: HttpRequest, message_id: int) -> HttpResponse:
    """One message as HTML (polled while an answer from a dropped connection is pending)."""
    message = selectors.message_get_for_owner(user=request.user, message_id=message_id)
    if message is None:
        raise Http404
    feedback = message.feedback.filter(user=request.user).first()
    poll = message.status == Message.Status.PENDING
    return HttpResponse(fragments.render_message(message, feedback=feedback, poll=poll))


@require_GET
@role_required(*CHAT_ROLES)
def source(request: HttpRequest, chunk_id: int) -> HttpResponse:
    """A retrieved chunk with the quoted span highlighted (escaped first, then marked)."""
    chunk = selectors.source_chunk_get(user=request.user, chunk_id=chunk_id)
    if chunk is None:
        raise Http404
    spans: list[tuple[int, int]] = []
    citation: Citation | None = None
    message = None
    if request.GET.get("m"):
        message = selectors.message_get_for_owner(
            user=request.user, message_id=_int(request.GET["m"])
        )
        if message is None:
            raise Http404
        wanted = _int(request.GET.get("n"))
        for data in message.citation_list():
            c = Citation.from_dict(data)
            if c.chunk_id == str(chunk.pk) and c.start is not None and c.end is not None:
                spans.append((c.start, c.end))
                if c.n == wanted:
                    citation = c
        if citation is not None:
            # The clicked quote first, so #quote-0 is the one the link meant.
            spans = [(citation.start, citation.end)] + [
                s for s in spans if s != (citation.start, citation.end)
            ]  # type: ignore[list-item]
    return render(
        request,
        "chat/source.html",
        {
            "chunk": chunk,
            "document": chunk.document,
            "kb": chunk.document.kb,
            "chunk_html": highlight_spans(chunk.text, spans[:1] if citation else spans),
            "citation": citation,
            "message": message,
        },
    )


@require_POST
@role_required(*CHAT_ROLES)
def feedback(request: HttpRequest, message_id: int) -> HttpResponse:
    message = selectors.message_get_for_owner(user=request.user, message_id=message_id)
    if message is None:
        raise Http404
    existing = message.feedback.filter(user=request.user).first()
    try:
        if request.POST.get("send_to_review") and existing is not None:
            existing.comment = request.POST.get("comment", existing.comment).strip()[:4000]
            existing.save(update_fields=["comment"])
            fb = services.feedback_send_to_review(feedback=existing, user=request.user)
        else:
            fb = services.feedback_submit(
                message=message,
                user=request.user,
                value=request.POST.get("value", ""),
                comment=request.POST.get("comment", ""),
            )
    except services.ChatError as exc:
        if request.htmx:
            return HttpResponse(f'<p class="error">{escape(str(exc))}</p>', status=400)
        messages.error(request, str(exc))
        return redirect("chat:conversation", message.conversation_id)
    if request.htmx:
        return render(request, "chat/partials/feedback.html", {"message": message, "feedback": fb})
    return redirect("chat:conversation", message.conversation_id)


@require_GET
@role_required(Role.ADMIN)
def feedback_list(request: HttpRequest) -> HttpResponse:
    value = request.GET.get("value") or None
    if value not in (None, *Feedback.Value.values):
        value = None
    items = list(selectors.feedback_list(value=value)[:200])
    return render(request, "chat/feedback_list.html", {"items": items, "value": value})


@require_POST
@role_required(Role.ADMIN)
def feedback_review(request: HttpRequest, feedback_id: int) -> HttpResponse:
    fb = selectors.feedback_list().filter(pk=feedback_id).first()
    if fb is None:
        raise Http404
    try:
        services.feedback_send_to_review(feedback=fb, user=request.user)
        messages.success(request, "Sent to the review queue as a candidate pair.")
    except services.ChatError as exc:
        messages.error(request, str(exc))
    return redirect("chat:feedback_list")


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
