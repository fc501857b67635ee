"""Review workspace pages (reviewer and admin): queue, pair, history, agreement, bulk."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from corpus.dataset.render import render_answer_parts, render_highlighted
from corpus.dataset.selectors import (
    SORTS,
    kb_events,
    next_pair,
    pair_events,
    review_kbs,
    review_queue,
)
from corpus.dataset.services import (
    ConflictError,
    PairFilter,
    QAError,
    qa_agreement,
    qa_pair_update,
    qa_pairs_bulk,
)
from corpus.models import KnowledgeBase, QAPair
from raftweb.core.roles import Role, role_required, user_has_role
from raftweb.raft.evidence import context_key, oracle_key
from raftweb.raft.quotes import quoted_spans

REVIEW_ROLES = (Role.REVIEWER, Role.ADMIN)
FILTER_KEYS = (
    "status",
    "min_score",
    "max_score",
    "unscored",
    "quote",
    "document",
    "split",
    "source",
    "job",
    "q",
    "sort",
)
MIN_DECIDED_FOR_AGREEMENT = 10


def _kb(request: HttpRequest, slug: str | None) -> KnowledgeBase | None:
    kbs = review_kbs(request.user)
    if slug:
        kb = kbs.filter(slug=slug).first()
        if kb is None:
            from django.http import Http404

            raise Http404("No such knowledge base.")
        return kb
    return kbs.first()


def _filter_query(params: Any) -> str:
    return urlencode({k: params.get(k) for k in FILTER_KEYS if params.get(k)})


def _queue_params(request: HttpRequest) -> QueryDict:
    """The queue filters a pair page was opened with. A pair page's form carries them in ONE
    hidden field, ``queue``, never as loose fields: the pair's own fields (``split``,
    ``question``) share names with filters, and a pair's split must not become the filter
    that picks the next pair (approving a train pair skipped the eval pair after it)."""
    if request.method == "POST":
        return QueryDict(request.POST.get("queue", ""))
    return request.GET


@role_required(*REVIEW_ROLES)
def queue(request: HttpRequest) -> HttpResponse:
    kb = _kb(request, request.GET.get("kb"))
    if kb is None:
        return render(request, "corpus/review/queue.html", {"kb": None, "kbs": []})
    filters = PairFilter.from_params(request.GET)
    sort = request.GET.get("sort", "id")
    qs = review_queue(kb=kb, filters=filters, sort=sort)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    ctx = {
        "kb": kb,
        "kbs": review_kbs(request.user),
        "page": page,
        "filters": filters,
        "sort": sort,
        "sorts": list(SORTS),
        "documents": kb.documents.order_by("name"),
        "total": page.paginator.count,
        "filter_query": _filter_query(request.GET),
        "params": request.GET,
        "counts": {
            s: QAPair.objects.filter(kb=kb, status=s).count()
            for s in ("pending", "approved", "rejected")
        },
        "is_admin": user_has_role(request.user, Role.ADMIN),
    }
    template = (
        "corpus/review/partials/queue_table.html" if request.htmx else "corpus/review/queue.html"
    )
    return render(request, template, ctx)


def _pair_context(request: HttpRequest, pair: QAPair) -> dict[str, Any]:
    checks = pair.quote_checks or []
    contexts = []
    ids = list(pair.context_chunk_ids or [])
    titles = list(pair.context_titles or [])
    for i, text in enumerate(pair.context_texts or []):
        # The same keys the quote checks were made with (a context without an id is "ctx<i>").
        key = context_key(ids[i] if i < len(ids) else None, i)
        contexts.append(
            {
                "index": i,
                "title": titles[i] if i < len(titles) else "",
                "is_oracle": pair.oracle_index == i,
                "html": render_highlighted(text, quoted_spans(checks, key)),
            }
        )
    oracle = oracle_key(pair.oracle_chunk_id)
    reasoning_html, final_html = render_answer_parts(pair.cot_answer, checks, pair.final_answer)
    return {
        "pair": pair,
        "kb": pair.kb,
        "reasoning_html": reasoning_html,
        "final_html": final_html,
        "oracle_html": render_highlighted(pair.oracle_text, quoted_spans(checks, oracle)),
        "contexts": contexts,
        "checks": checks,
        "filter_query": _filter_query(_queue_params(request)),
        "events": pair_events(pair)[:20],
    }


@role_required(*REVIEW_ROLES)
def pair_detail(request: HttpRequest, pk: int) -> HttpResponse:
    pair = get_object_or_404(QAPair.objects.select_related("kb", "document", "job"), pk=pk)
    if not review_kbs(request.user).filter(pk=pair.kb_id).exists():
        from django.http import Http404

        raise Http404("No such pair.")
    status = 200
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            version = int(request.POST.get("version", ""))
        except ValueError:
            version = -1
        edit = action == "edit" or action in ("save_approve",)
        try:
            qa_pair_update(
                pair_id=pair.pk,
                user=request.user,
                version=version,
                action="approve" if action == "save_approve" else action,
                question=request.POST.get("question") if edit else None,
                cot_answer=request.POST.get("cot_answer") if edit else None,
                split=request.POST.get("split") or None if edit else None,
            )
        except ConflictError as exc:
            messages.error(request, exc.message)
            status = 409
        except QAError as exc:
            messages.error(request, exc.message)
            status = 400
        else:
            labels = {
                "approve": "Approved",
                "reject": "Rejected",
                "edit": "Saved",
                "reset": "Back to pending",
                "save_approve": "Saved and approved",
            }
            messages.success(request, f"{labels.get(action, 'Saved')} pair {pair.pk}.")
            queue = _queue_params(request)
            filters = PairFilter.from_params(queue)
            query = _filter_query(queue)
            if (
                action in ("approve", "reject", "save_approve")
                and request.POST.get("advance") != "0"
            ):
                nxt = next_pair(pair=pair, filters=filters, sort=queue.get("sort", "id"))
                if nxt is not None:
                    return HttpResponseRedirect(
                        reverse("review:pair", args=[nxt.pk]) + (f"?{query}" if query else "")
                    )
            return HttpResponseRedirect(
                reverse("review:pair", args=[pair.pk]) + (f"?{query}" if query else "")
            )
        pair.refresh_from_db()
    ctx = _pair_context(request, pair)
    if status == 409:
        # Show what the other reviewer saved, and keep this reviewer's unsaved text to copy from.
        ctx["conflict_question"] = request.POST.get("question", "")
        ctx["conflict_answer"] = request.POST.get("cot_answer", "")
    return render(request, "corpus/review/pair.html", ctx, status=status)


@role_required(*REVIEW_ROLES)
def pair_history(request: HttpRequest, pk: int) -> HttpResponse:
    pair = get_object_or_404(QAPair.objects.select_related("kb"), pk=pk)
    if not review_kbs(request.user).filter(pk=pair.kb_id).exists():
        from django.http import Http404

        raise Http404("No such pair.")
    return render(
        request,
        "corpus/review/history.html",
        {"pair": pair, "kb": pair.kb, "events": pair_events(pair)},
    )


@role_required(*REVIEW_ROLES)
def kb_history(request: HttpRequest) -> HttpResponse:
    kb = _kb(request, request.GET.get("kb"))
    events = Paginator(kb_events(kb), 100).get_page(request.GET.get("page")) if kb else None
    return render(
        request,
        "corpus/review/history.html",
        {"pair": None, "kb": kb, "kbs": review_kbs(request.user), "events": events},
    )


@role_required(*REVIEW_ROLES)
@require_POST
def bulk(request: HttpRequest) -> HttpResponse:
    kb = _kb(request, request.POST.get("kb"))
    if kb is None:
        return HttpResponseRedirect(reverse("review:queue"))
    filters = PairFilter.from_params(request.POST)
    try:
        n = qa_pairs_bulk(
            kb=kb, user=request.user, filters=filters, action=request.POST.get("action", "")
        )
    except QAError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{request.POST.get('action', '').capitalize()}d {n} pair(s).")
    query = _filter_query(request.POST)
    return HttpResponseRedirect(
        reverse("review:queue") + f"?kb={kb.slug}" + (f"&{query}" if query else "")
    )


@role_required(*REVIEW_ROLES)
def agreement(request: HttpRequest) -> HttpResponse:
    kb = _kb(request, request.GET.get("kb"))
    stats = None
    if kb is not None:
        try:
            threshold = int(request.GET.get("threshold", 3))
        except ValueError:
            threshold = 3
        stats = qa_agreement(kb=kb, threshold=max(1, min(5, threshold)))
    return render(
        request,
        "corpus/review/agreement.html",
        {
            "kb": kb,
            "kbs": review_kbs(request.user),
            "stats": stats,
            "min_decided": MIN_DECIDED_FOR_AGREEMENT,
        },
    )
