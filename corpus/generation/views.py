"""Generation pages (admins): jobs, new job, progress, cancel/resume, prompts."""

from __future__ import annotations

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
from raftweb.core.typedforms import config_form
from raftweb.raft.pipeline import GenerationConfig
from raftweb.raft.prompts import PromptSet


class _KBPicker(forms.Form):
    kb = forms.ModelChoiceField(
        queryset=KnowledgeBase.objects.order_by("name"),
        to_field_name="slug",
        label="Knowledge base",
    )


PROFILE_CHOICES: tuple[str, ...] = next(
    s.knob.choices for s in GenerationConfig.specs() if s.name == "teacher_profile"
)

# Every knob of GenerationConfig, with its bounds, label and help, after the KB picker.
GenerationForm = config_form(GenerationConfig, base=_KBPicker)


@role_required(Role.ADMIN)
def generation_list(request: HttpRequest) -> HttpResponse:
    jobs = kb_jobs()[:100]
    template = (
        "corpus/generation/partials/jobs_table.html"
        if request.htmx
        else "corpus/generation/list.html"
    )
    return render(request, template, {"jobs": jobs, "any_active": any(j.is_active for j in jobs)})


def _profile_warnings(request: HttpRequest) -> HttpResponse:
    """The new-job form's warning fragment: the teacher or judge profile it would use is known
    to be unavailable (the cached health report), so the job would fail once queued."""
    from asgiref.sync import async_to_sync

    from raftweb.core.health import cached_health_report

    choices = set(PROFILE_CHOICES)
    wanted = {
        "teacher": request.GET.get("teacher_profile") or "teacher",
        "judge": request.GET.get("judge_profile") or "judge",
    }
    models = async_to_sync(cached_health_report)()["models"]
    problems = []
    for use, role in wanted.items():
        check = models.get(role) if role in choices else None
        if check is not None and not check["ok"]:
            problems.append({"use": use, "role": role, "detail": check["detail"]})
    return render(
        request, "corpus/generation/partials/profile_warnings.html", {"problems": problems}
    )


@role_required(Role.ADMIN)
def generation_new(request: HttpRequest) -> HttpResponse:
    if request.htmx and request.GET.get("fragment") == "profiles":
        return _profile_warnings(request)
    initial = {"kb": request.GET.get("kb")} if request.GET.get("kb") else {}
    kbs = list(KnowledgeBase.objects.order_by("name").values_list("slug", flat=True)[:2])
    if not initial and len(kbs) == 1:
        initial["kb"] = kbs[0]  # the only knowledge base: nothing to choose
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
        request,
        "corpus/generation/new.html",
        {"form": form, "no_kb": not kbs},
        status=400 if form.errors else 200,
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
