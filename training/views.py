"""Training pages (admins): every KB's training state, a KB's runs, new run and model versions,
a run's progress, and the cancel / resume / activate / merge buttons."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from corpus.knowledge.selectors import kbs_visible_to
from corpus.models import KnowledgeBase
from raftweb.core.roles import Role, role_required
from raftweb.errors import RaftwebError
from training.models import ModelKind, ModelVersion, TrainingRun
from training.selectors import (
    active_versions,
    kb_runs,
    kb_training_rows,
    kb_versions,
    run_is_stale,
    run_log_tail,
    run_metrics,
    version_index_status,
)
from training.services import (
    METHODS,
    model_version_activate,
    model_version_merge,
    training_overrides,
    training_run_cancel,
    training_run_resume,
    training_run_start,
)

METRICS_SHOWN = 200


class TrainingRunForm(forms.Form):
    kind = forms.ChoiceField(choices=ModelKind.choices, label="Model to fine-tune")
    method = forms.ChoiceField(
        choices=[("", "the preset's")] + [(m, m) for m in METHODS],
        required=False,
        help_text="Generator: LoRA adapter, QLoRA (4-bit base) or all weights.",
    )
    preset = forms.CharField(
        required=False, max_length=100, help_text="A training recipe, e.g. cpu-smoke, lora-1gpu."
    )
    base_model = forms.CharField(
        required=False, max_length=500, label="Base model", help_text="Model id or local path."
    )
    epochs = forms.FloatField(required=False, min_value=0.01)
    learning_rate = forms.FloatField(required=False, min_value=0.0, label="Learning rate")
    overrides = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="More settings (JSON)",
        help_text='Other values of the training config, e.g. {"lora_r": 16}.',
    )
    activate = forms.BooleanField(required=False, label="Activate the new version on success")

    def clean_overrides(self) -> dict[str, Any]:
        raw = (self.cleaned_data.get("overrides") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value


def _kb(request: HttpRequest, slug: str) -> KnowledgeBase:
    return get_object_or_404(kbs_visible_to(request.user), slug=slug)


def _run(request: HttpRequest, pk: int) -> TrainingRun:
    return get_object_or_404(kb_runs().filter(kb__in=kbs_visible_to(request.user)), pk=pk)


def _version(request: HttpRequest, pk: int) -> ModelVersion:
    return get_object_or_404(
        ModelVersion.objects.select_related("kb").filter(kb__in=kbs_visible_to(request.user)),
        pk=pk,
    )


@role_required(Role.ADMIN)
def training_home(request: HttpRequest) -> HttpResponse:
    runs = list(kb_runs().filter(kb__in=kbs_visible_to(request.user))[:50])
    ctx = {"runs": runs, "any_active": any(r.is_active for r in runs), "show_kb": True}
    if request.htmx and request.GET.get("fragment") == "runs":
        ctx["refresh_url"] = reverse("training:home")
        return render(request, "training/partials/runs_table.html", ctx)
    kbs = [
        {"kb": kb, "rows": kb_training_rows(kb), "active": active_versions(kb)}
        for kb in kbs_visible_to(request.user).order_by("name")
    ]
    return render(request, "training/home.html", {**ctx, "kbs": kbs})


@role_required(Role.ADMIN)
def training_kb(request: HttpRequest, slug: str) -> HttpResponse:
    """A KB's runs (refreshing while one is active), the new-run form and its model versions."""
    kb = _kb(request, slug)
    runs = list(kb_runs(kb)[:50])
    ctx: dict[str, Any] = {
        "kb": kb,
        "runs": runs,
        "any_active": any(r.is_active for r in runs),
        "refresh_url": reverse("training:kb", args=[kb.slug]),
    }
    if request.htmx and request.GET.get("fragment") == "runs":
        return render(request, "training/partials/runs_table.html", ctx)
    form = TrainingRunForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            overrides = dict(data["overrides"])
            overrides.update(
                training_overrides(
                    kind=data["kind"],
                    preset=data["preset"] or None,
                    base_model=data["base_model"] or None,
                    epochs=data["epochs"],
                    learning_rate=data["learning_rate"],
                )
            )
            run = training_run_start(
                kb=kb,
                kind=data["kind"],
                method=data["method"] or None,
                preset=data["preset"] or None,
                overrides=overrides,
                activate=data["activate"],
                user=request.user,
            )
        except RaftwebError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Training run {run.pk} queued ({run.rows_train} rows).")
            return HttpResponseRedirect(reverse("training:run", args=[run.pk]))
    active = active_versions(kb)
    active_ids = {v.pk for v in active.values() if v is not None}
    versions = [
        {"v": v, "active": v.pk in active_ids, "index_status": version_index_status(v)}
        for v in kb_versions(kb)[:100]
    ]
    ctx.update(form=form, rows=kb_training_rows(kb), active=active, versions=versions)
    return render(request, "training/kb.html", ctx, status=400 if form.errors else 200)


@role_required(Role.ADMIN)
def training_run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk)
    ctx = {
        "run": run,
        "stale": run_is_stale(run),
        "log_tail": run_log_tail(run),
        "metrics": run_metrics(run, limit=METRICS_SHOWN),
        "version": ModelVersion.objects.filter(run=run).first(),
    }
    if request.htmx and request.GET.get("fragment") == "progress":
        return render(request, "training/partials/run_progress.html", ctx)
    return render(request, "training/run.html", ctx)


@role_required(Role.ADMIN)
@require_POST
def training_run_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk)
    try:
        training_run_cancel(run=run)
    except RaftwebError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Cancelling training run {run.pk}.")
    return HttpResponseRedirect(reverse("training:run", args=[run.pk]))


@role_required(Role.ADMIN)
@require_POST
def training_run_resume_view(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk)
    try:
        training_run_resume(run=run)
    except RaftwebError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, f"Training run {run.pk} queued again; it resumes from its checkpoint."
        )
    return HttpResponseRedirect(reverse("training:run", args=[run.pk]))


@role_required(Role.ADMIN)
@require_POST
def model_version_activate_view(request: HttpRequest, pk: int) -> HttpResponse:
    version = _version(request, pk)
    try:
        done = model_version_activate(version=version, user=request.user)
    except RaftwebError as exc:
        messages.error(request, exc.message)
    else:
        if done:
            messages.success(request, f"{version.label} is now the active {version.kind} model.")
        else:
            messages.info(request, f"Indexing with {version.label}; it becomes active when ready.")
    return HttpResponseRedirect(reverse("training:kb", args=[version.kb.slug]))


@role_required(Role.ADMIN)
@require_POST
def model_version_merge_view(request: HttpRequest, pk: int) -> HttpResponse:
    version = _version(request, pk)
    try:
        model_version_merge(version=version)
    except RaftwebError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Merging {version.label} into its base model.")
    return HttpResponseRedirect(reverse("training:kb", args=[version.kb.slug]))
