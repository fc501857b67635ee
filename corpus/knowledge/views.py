"""Knowledge-base pages (admin). One view per page; htmx requests get the page's fragment."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from corpus.knowledge import indexes, relevance, search, selectors, services
from corpus.knowledge.forms import KnowledgeBaseForm, SearchForm
from corpus.knowledge.highlight import highlight
from corpus.knowledge.indexes import CorpusError
from corpus.knowledge.uploads import (
    LimitedUploadHandler,
    UploadTooLarge,
    human_size,
    max_upload_bytes,
)
from corpus.models import Document, KnowledgeBase
from raftweb.core.roles import Role, role_required

admin_only = role_required(Role.ADMIN)


def _kb(slug: str) -> KnowledgeBase:
    return get_object_or_404(KnowledgeBase, slug=slug)


@admin_only
def kb_list(request: HttpRequest) -> HttpResponse:
    return render(request, "corpus/kb_list.html", {"kbs": selectors.kb_list_with_counts()})


@admin_only
def kb_create(request: HttpRequest) -> HttpResponse:
    form = KnowledgeBaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            kb = services.kb_create(user=request.user, **form.cleaned_data)
        except CorpusError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Knowledge base “{kb.name}” created.")
            return redirect("corpus:kb_detail", slug=kb.slug)
    return render(request, "corpus/kb_form.html", {"form": form, "kb": None})


@admin_only
def kb_edit(request: HttpRequest, slug: str) -> HttpResponse:
    kb = _kb(slug)
    initial = {
        "name": kb.name,
        "description": kb.description,
        "chunk_size": kb.chunk_size,
        "chunk_overlap": kb.chunk_overlap,
        "allowed_groups": list(kb.allowed_groups.all()),
    }
    form = KnowledgeBaseForm(request.POST or None, initial=initial, editing=True)
    if request.method == "POST" and form.is_valid():
        try:
            services.kb_update(kb=kb, **form.cleaned_data)
        except CorpusError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Saved. New chunk settings apply after a re-index.")
            return redirect("corpus:kb_detail", slug=kb.slug)
    return render(request, "corpus/kb_form.html", {"form": form, "kb": kb})


@admin_only
def kb_delete(request: HttpRequest, slug: str) -> HttpResponse:
    kb = _kb(slug)
    if request.method == "POST":
        name = kb.name
        try:
            services.kb_delete(kb=kb)
        except CorpusError as exc:
            messages.error(request, exc.message)
            return redirect("corpus:kb_detail", slug=slug)
        messages.success(request, f"Knowledge base “{name}” deleted.")
        return redirect("corpus:kb_list")
    return render(
        request, "corpus/kb_confirm_delete.html", {"kb": kb, "documents": kb.documents.count()}
    )


def _documents_context(kb: KnowledgeBase) -> dict[str, Any]:
    documents = list(selectors.kb_documents(kb))
    return {
        "kb": kb,
        "documents": documents,
        "chunks": selectors.kb_chunk_count(kb),
        "polling": any(d.in_progress for d in documents),
    }


# Where a knowledge base's work continues: (label, URL name, args from the slug, query).
# Pages of apps that are not installed (yet) are left out rather than linked to a 404.
KB_LINKS: tuple[tuple[str, str, bool, str], ...] = (
    ("Dataset: import / export", "review:kb_dataset", True, ""),
    ("Generate Q&A", "generation:new", False, "kb"),
    ("Review", "review:queue", False, "kb"),
    ("Training", "training:kb", True, ""),
    ("Evaluation", "evaluation:kb", True, ""),
    ("Chat", "chat:kb", True, ""),
)


def _kb_links(kb: KnowledgeBase) -> list[dict[str, str]]:
    links = []
    for label, name, by_slug, query in KB_LINKS:
        try:
            url = reverse(name, args=[kb.slug] if by_slug else [])
        except NoReverseMatch:
            continue
        if query:
            url += "?" + urlencode({query: kb.slug})
        links.append({"label": label, "name": name, "url": url})
    return links


@admin_only
def kb_detail(request: HttpRequest, slug: str) -> HttpResponse:
    kb = _kb(slug)
    context = _documents_context(kb)
    if request.htmx:
        return render(request, "corpus/partials/documents.html", context)
    context.update(
        {
            "max_upload": human_size(max_upload_bytes()),
            "versions": kb.embedding_indexes.all(),
            "kb_links": _kb_links(kb),
            "chunk_cap": indexes.kb_chunk_token_cap(kb),
        }
    )
    return render(request, "corpus/kb_detail.html", context)


@csrf_exempt  # the handler must be installed before anything (the CSRF check) reads the body
def kb_upload(request: HttpRequest, slug: str) -> HttpResponse:
    if request.method == "POST":
        request.upload_handlers.insert(0, LimitedUploadHandler(request))
    return _kb_upload(request, slug)


@csrf_protect
@admin_only
@require_POST
def _kb_upload(request: HttpRequest, slug: str) -> HttpResponse:
    kb = _kb(slug)
    files = request.FILES.getlist("files")  # parses the body (our handler runs first)
    results: list[dict[str, Any]] = [
        {
            "name": name,
            "ok": False,
            "error": f"file is larger than the upload limit of {human_size(max_upload_bytes())}",
        }
        for name in getattr(request, "too_large_uploads", [])
    ]
    for f in files:
        try:
            with transaction.atomic():
                result = services.document_upload(
                    kb=kb, name=f.name or "upload", chunks=f.chunks(), user=request.user
                )
        except (UploadTooLarge, CorpusError) as exc:
            results.append({"name": f.name, "ok": False, "error": str(exc)})
            continue
        document = result.document
        results.append(
            {
                "name": f.name,
                "ok": True,
                "id": document.pk,
                "duplicate": not result.created,
                "status": document.status,
                # A duplicate names the document it duplicates (maybe under another name).
                "document": document.name,
                "url": reverse("corpus:document_detail", args=[kb.slug, document.pk]),
            }
        )
    wants_json = "application/json" in request.headers.get("Accept", "")
    if wants_json:
        status = 200 if any(r["ok"] for r in results) or not results else 400
        if results and all("larger than" in str(r.get("error", "")) for r in results):
            status = 413
        return JsonResponse({"results": results}, status=status)
    for r in results:
        if r["ok"] and r["duplicate"]:
            messages.info(request, f"{r['name']}: already uploaded as “{r['document']}”")
        elif r["ok"]:
            messages.success(request, f"{r['name']}: queued")
        else:
            messages.error(request, f"{r['name']}: {r['error']}")
    if not results:
        messages.error(request, "Choose one or more files to upload.")
    return redirect("corpus:kb_detail", slug=kb.slug)


@admin_only
@require_POST
def kb_reindex(request: HttpRequest, slug: str) -> HttpResponse:
    kb = _kb(slug)
    with transaction.atomic():
        n = services.kb_reindex(kb=kb)
    messages.success(request, f"Re-indexing {n} document(s).")
    return redirect("corpus:kb_detail", slug=kb.slug)


@admin_only
def document_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    kb = _kb(slug)
    document = get_object_or_404(Document, kb=kb, pk=pk)
    page = Paginator(selectors.document_chunks(document), 50).get_page(request.GET.get("page"))
    context = {"kb": kb, "document": document, "page": page}
    if request.htmx:
        return render(request, "corpus/partials/chunks.html", context)
    return render(request, "corpus/document_detail.html", context)


@admin_only
@require_POST
def document_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    kb = _kb(slug)
    document = get_object_or_404(Document, kb=kb, pk=pk)
    name = document.name
    indexes.document_delete(document=document)
    messages.success(request, f"Deleted {name}.")
    if request.htmx:
        return render(request, "corpus/partials/documents.html", _documents_context(kb))
    return redirect("corpus:kb_detail", slug=kb.slug)


@admin_only
@require_POST
def document_retry(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    kb = _kb(slug)
    document = get_object_or_404(Document, kb=kb, pk=pk)
    try:
        with transaction.atomic():
            services.document_retry(document=document)
    except CorpusError as exc:
        messages.error(request, exc.message)
    if request.htmx:
        return render(request, "corpus/partials/documents.html", _documents_context(kb))
    return redirect("corpus:kb_detail", slug=kb.slug)


def _cues(kb: KnowledgeBase, query: str, mode: str, results: list[Any]) -> list[Any]:
    """The relevance cue of each hit (corpus/knowledge/relevance.py)."""
    if mode == "dense":  # a dense hit's score is its cosine similarity already
        return [relevance.cue_for(h.score, lexical=False) for h in results]
    try:
        index = search.resolve_embedding_version(kb, None)
        embedder = indexes.kb_embedder(kb, index.model or None)
    except Exception:  # noqa: BLE001 - no model: the cue falls back to BM25's evidence
        embedder = None
    return relevance.relevance_cues(embedder=embedder, query=query, hits=results)


@admin_only
def kb_search(request: HttpRequest, slug: str) -> HttpResponse:
    kb = _kb(slug)
    form = SearchForm(request.GET or None)
    hits: list[dict[str, Any]] = []
    error = ""
    query = ""
    if form.is_bound and not form.is_valid():
        error = " ".join(str(e) for errors in form.errors.values() for e in errors)
    elif form.is_valid() and form.cleaned_data.get("q"):
        query = form.cleaned_data["q"]
        mode = form.cleaned_data.get("mode") or "hybrid"
        try:
            results = search.kb_search(
                kb=kb, query=query, mode=mode, k=form.cleaned_data.get("k") or 5
            )
        except CorpusError as exc:
            error = exc.message
        else:
            cues = _cues(kb, query, mode, results)
            hits = [
                {"hit": h, "html": highlight(h.text, query), "cue": cue}
                for h, cue in zip(results, cues, strict=True)
            ]
    context = {
        "kb": kb,
        "form": form,
        "hits": hits,
        "error": error,
        "query": query,
        # Nothing matched well: say so above the closest chunks rather than pass them off.
        "no_good_match": bool(hits) and all(h["cue"].level == "none" for h in hits),
    }
    if request.htmx:
        return render(request, "corpus/partials/search_results.html", context)
    return render(request, "corpus/search.html", context)


@admin_only
@require_POST
def kb_embedding_activate(request: HttpRequest, slug: str) -> HttpResponse:
    kb = _kb(slug)
    try:
        services.kb_embedding_activate(kb=kb, version=request.POST.get("version", ""))
    except CorpusError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Search now uses the “{kb.embedding_version}” embeddings.")
    return redirect("corpus:kb_detail", slug=kb.slug)
