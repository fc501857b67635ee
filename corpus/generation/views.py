"""Generation pages (admins): jobs, new job, progress, cancel/resume, prompts."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from corpus.dataset.services import QAError
from corpus.generation.prompts import kb_prompts_update
from corpus.generation.selectors import job_is_stale, kb_jobs
from corpus.generation.services import (
    generation_job_cancel,
    generation_job_create,
    generation_job_resume,
)
from corpus.models import GenerationJob, KBPromptOverrides, KnowledgeBase
from raftweb.core.roles import Role, role_required
from raftweb.raft.pipeline import GenerationConfig
from raftweb.raft.prompts import PromptSet

DEFAULTS = GenerationConfig()


class GenerationForm(forms.Form):
    kb = forms.ModelChoiceField(
        queryset=KnowledgeBase.objects.order_by("name"),
        to_field_name="slug",
        label="Knowledge base",
    )
    questions_per_chunk = forms.IntegerField(
        min_value=1, max_value=50, initial=DEFAULTS.questions_per_chunk
    )
    num_distractors = forms.IntegerField(
        min_value=0, max_value=20, initial=DEFAULTS.num_distractors, label="Distractors per row"
    )
    p = forms.FloatField(
        min_value=0, max_value=1, initial=DEFAULTS.p, label="p (oracle in context)"
    )
    hard_negative_share = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=DEFAULTS.hard_negative_share,
        label="Share of hard-negative distractors",
    )
    hard_negative_mode = forms.ChoiceField(
        choices=[("hybrid", "hybrid"), ("dense", "dense"), ("bm25", "bm25")],
        initial=DEFAULTS.hard_negative_mode,
        label="Hard negatives retrieved by",
    )
    refusal_share = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=DEFAULTS.refusal_share,
        label="Share of refusal rows among rows without the oracle",
    )
    limit_chunks = forms.IntegerField(min_value=1, required=False, label="Only the first N chunks")
    document_ids = forms.CharField(
        required=False, label="Only these document ids (comma separated)"
    )
    max_concurrency = forms.IntegerField(
        min_value=1, max_value=256, initial=DEFAULTS.max_concurrency
    )
    max_new_tokens = forms.IntegerField(min_value=16, initial=DEFAULTS.max_new_tokens)
    judge_enabled = forms.BooleanField(required=False, initial=True, label="Judge every row")
    judge_threshold = forms.IntegerField(min_value=1, max_value=5, initial=DEFAULTS.judge_threshold)
    reject_unverified_quotes = forms.BooleanField(required=False, initial=True)
    teacher_profile = forms.ChoiceField(
        choices=[("teacher", "teacher"), ("judge", "judge"), ("student", "student")],
        initial="teacher",
    )
    judge_profile = forms.ChoiceField(
        choices=[("judge", "judge"), ("teacher", "teacher"), ("student", "student")],
        initial="judge",
    )
    eval_share = forms.FloatField(
        min_value=0,
        max_value=0.9,
        initial=DEFAULTS.eval_share,
        label="Share of documents held out for eval",
    )
    seed = forms.IntegerField(initial=DEFAULTS.seed)

    def config(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data.pop("kb")
        raw = data.pop("document_ids") or ""
        try:
            data["document_ids"] = [int(x) for x in raw.replace(" ", "").split(",") if x]
        except ValueError:
            raise forms.ValidationError("document ids must be numbers") from None
        return {k: v for k, v in data.items() if v is not None}


@role_required(Role.ADMIN)
def generation_list(request: HttpRequest) -> HttpResponse:
    jobs = kb_jobs()[:100]
    template = (
        "corpus/generation/partials/jobs_table.html"
        if request.htmx
        else "corpus/generation/list.html"
    )
    return render(request, template, {"jobs": jobs, "any_active": any(j.is_active for j in jobs)})


@role_required(Role.ADMIN)
def generation_new(request: HttpRequest) -> HttpResponse:
    initial = {"kb": request.GET.get("kb")} if request.GET.get("kb") else {}
    form = GenerationForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = generation_job_create(
                kb=form.cleaned_data["kb"], user=request.user, config=form.config()
            )
        except (QAError, forms.ValidationError) as exc:
            form.add_error(None, getattr(exc, "message", str(exc)))
        else:
            messages.success(
                request, f"Generation job {job.pk} queued ({job.chunks_total} chunks)."
            )
            return HttpResponseRedirect(reverse("generation:detail", args=[job.pk]))
    return render(
        request, "corpus/generation/new.html", {"form": form}, status=400 if form.errors else 200
    )


@role_required(Role.ADMIN)
def generation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob.objects.select_related("kb", "created_by"), pk=pk)
    ctx = {
        "job": job,
        "stale": job_is_stale(job),
        "failed_units": job.units.filter(state="failed").select_related("chunk")[:20],
    }
    if request.htmx and request.GET.get("fragment") == "progress":
        return render(request, "corpus/generation/partials/progress.html", ctx)
    return render(request, "corpus/generation/detail.html", ctx)


@role_required(Role.ADMIN)
@require_POST
def generation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob, pk=pk)
    try:
        generation_job_cancel(job=job)
    except QAError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Cancelling job {job.pk}.")
    return HttpResponseRedirect(reverse("generation:detail", args=[job.pk]))


@role_required(Role.ADMIN)
@require_POST
def generation_resume(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob, pk=pk)
    try:
        generation_job_resume(job=job)
    except QAError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Job {job.pk} queued again; finished chunks are kept.")
    return HttpResponseRedirect(reverse("generation:detail", args=[job.pk]))


@role_required(Role.ADMIN)
def kb_prompts_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Per-KB prompt overrides (advanced): an empty field means the built-in default."""

    kb = get_object_or_404(KnowledgeBase, slug=slug)
    defaults = PromptSet().as_dict()
    if request.method == "POST":
        overrides = {name: request.POST.get(name, "") for name in defaults}
        overrides = {
            k: v for k, v in overrides.items() if v.strip() and v.strip() != defaults[k].strip()
        }
        kb_prompts_update(kb=kb, overrides=overrides)
        messages.success(request, f"Saved {len(overrides)} prompt override(s).")
        return HttpResponseRedirect(reverse("generation:kb_prompts", args=[kb.slug]))
    row = KBPromptOverrides.objects.filter(kb=kb).first()
    current = dict(row.overrides) if row else {}
    fields = [{"name": n, "default": d, "value": current.get(n, "")} for n, d in defaults.items()]
    return render(request, "corpus/generation/prompts.html", {"kb": kb, "fields": fields})
