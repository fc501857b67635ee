"""Dataset import/export page."""

from __future__ import annotations

from django.contrib import messages
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_safe

from corpus.dataset.io import qa_export_lines, qa_import
from corpus.dataset.services import QAError
from corpus.models import KnowledgeBase
from raftweb.core.roles import Role, role_required
from raftweb.raft.formats import EXPORTERS


@role_required(Role.ADMIN)
def kb_dataset(request: HttpRequest, slug: str) -> HttpResponse:
    """Import a file of pairs, or export the dataset (download)."""
    kb = get_object_or_404(KnowledgeBase, slug=slug)
    result = None
    status = 200
    if request.method == "POST":
        upload = request.FILES.get("file")
        if upload is None:
            messages.error(request, "Choose a file to import.")
            status = 400
        else:
            try:
                result = qa_import(
                    kb=kb,
                    data=upload.read(),
                    filename=upload.name,
                    user=request.user,
                    status=request.POST.get("status", "pending"),
                    split=request.POST.get("split") or None,
                )
            except QAError as exc:
                messages.error(request, exc.message)
                status = 400
            else:
                messages.success(
                    request,
                    f"Imported {result['imported']} pair(s); skipped "
                    f"{result['duplicates']} duplicate(s) already in this knowledge base and "
                    f"{len(result['skipped'])} bad line(s).",
                )
    return render(
        request,
        "corpus/generation/dataset.html",
        {"kb": kb, "result": result, "formats": sorted(EXPORTERS)},
        status=status,
    )


@role_required(Role.ADMIN)
@require_safe  # a download is a GET; POST is refused rather than served as a read
def kb_export(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_object_or_404(KnowledgeBase, slug=slug)
    fmt = request.GET.get("format", "hf")
    split = request.GET.get("split", "train")
    status = request.GET.get("status", "approved")
    try:
        count, lines = qa_export_lines(kb=kb, fmt=fmt, split=split, status=status)
    except QAError as exc:
        if exc.code == "empty":
            messages.warning(request, exc.message)
            return HttpResponseRedirect(reverse("review:kb_dataset", args=[kb.slug]))
        raise Http404(exc.message) from None
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{kb.slug}-{fmt}-{split}.jsonl"'
    response["X-Row-Count"] = str(count)
    return response
