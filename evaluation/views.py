"""Evaluation pages: runs per KB and the new-run form, the dashboard (matrix, charts, live
progress with cancel), drill-down to the questions behind a cell and a question's answers side
by side, comparing two runs, CSV/JSON export, a printable report, and the promotion gate.

Admins start, cancel and resume runs and activate versions; reviewers read everything."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from corpus.knowledge.selectors import kbs_visible_to
from corpus.models import KnowledgeBase
from evaluation.gate import gate_pair
from evaluation.models import EvalQuestion, EvalResult, EvalRun, QuestionSet
from evaluation.selectors import (
    cell_results,
    judge_distribution,
    kb_eval_runs,
    metric_matrix,
    question_results,
    run_is_stale,
    run_summary,
)
from evaluation.services import eval_run_cancel, eval_run_resume, eval_run_start
from raftweb.core.roles import Role, role_required, user_has_role
from raftweb.errors import RaftwebError
from raftweb.eval.aggregate import METRICS
from raftweb.eval.configs import DEFAULT_K, MAX_K, MODES, parse_configs
from raftweb.raft.answer import answer_segments
from training.activation import PromotionRefused, promotion_gate
from training.models import ModelVersion
from training.selectors import active_versions, kb_versions
from training.services import model_version_activate

READ = (Role.ADMIN, Role.REVIEWER)


class EvalRunForm(forms.Form):
    configs = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        initial="emb=base,gen=base\nemb=active,gen=active",
        label="Configurations",
        help_text="One per line: emb=base|active|version:ID, gen=base|active|version:ID|"
        "profile:ROLE, optionally mode= and k=.",
    )
    question_set = forms.ChoiceField(required=False, label="Questions")
    mode = forms.ChoiceField(choices=[(m, m) for m in MODES], initial="hybrid")
    k = forms.IntegerField(min_value=1, max_value=MAX_K, initial=DEFAULT_K)
    limit = forms.IntegerField(required=False, min_value=1, help_text="The first N questions only.")

    def __init__(self, *args: Any, kb: KnowledgeBase, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sets = QuestionSet.objects.filter(kb=kb).order_by("name")
        self.fields["question_set"].choices = [("", "the eval split (approved pairs)")] + [
            (str(s.pk), f"{s.name} ({len(s.items)} questions)") for s in sets
        ]

    def clean_configs(self) -> list[Any]:
        lines = [ln.strip() for ln in self.cleaned_data["configs"].splitlines() if ln.strip()]
        try:
            return parse_configs(lines)
        except RaftwebError as exc:
            raise forms.ValidationError(exc.message) from None


def _kb(request: HttpRequest, slug: str) -> KnowledgeBase:
    return get_object_or_404(kbs_visible_to(request.user), slug=slug)


def _run(request: HttpRequest, pk: int) -> EvalRun:
    return get_object_or_404(kb_eval_runs().filter(kb__in=kbs_visible_to(request.user)), pk=pk)


def _admin_post(request: HttpRequest) -> None:
    if request.method == "POST" and not user_has_role(request.user, Role.ADMIN):
        raise PermissionDenied("Only admins start, stop or activate.")


@role_required(*READ)
def evaluation_home(request: HttpRequest) -> HttpResponse:
    kbs = kbs_visible_to(request.user).order_by("name")
    runs = list(kb_eval_runs().filter(kb__in=kbs)[:50])
    return render(request, "evaluation/home.html", {"kbs": kbs, "runs": runs})


@role_required(*READ)
def evaluation_kb(request: HttpRequest, slug: str) -> HttpResponse:
    """A KB's runs, the new-run form (admins), its question sets and model versions."""
    kb = _kb(request, slug)
    _admin_post(request)
    form = EvalRunForm(request.POST or None, kb=kb)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        qset = None
        if data["question_set"]:
            qset = QuestionSet.objects.filter(kb=kb, pk=int(data["question_set"])).first()
        try:
            run = eval_run_start(
                kb=kb,
                configs=data["configs"],
                mode=data["mode"],
                k=data["k"],
                question_set=qset,
                limit=data["limit"],
                user=request.user,
            )
        except RaftwebError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request, f"Evaluation run {run.pk} queued ({run.total_units} answers)."
            )
            return HttpResponseRedirect(reverse("evaluation:run", args=[run.pk]))
    active = active_versions(kb)
    ctx = {
        "kb": kb,
        "form": form,
        "runs": list(kb_eval_runs(kb)[:50]),
        "sets": QuestionSet.objects.filter(kb=kb).order_by("name"),
        "versions": list(kb_versions(kb)[:50]),
        "active_ids": {v.pk for v in active.values() if v is not None},
        "is_admin": user_has_role(request.user, Role.ADMIN),
    }
    return render(request, "evaluation/kb.html", ctx, status=400 if form.errors else 200)


def _dashboard(run: EvalRun) -> dict[str, Any]:
    summary = run_summary(run)
    bars = {
        "labels": [c["config"] for c in summary],
        "metrics": {
            m: [c["metrics"].get(m) for c in summary]
            for m in ("recall@k", "parse_success", "correct_reference", "quote_faithfulness",
                      "f1", "rouge_l", "judge_hard", "judge_soft")
        },
        "judge": judge_distribution(run),
        "recall_curve": [
            {"config": c["config"], "curve": c["counts"].get("recall_curve", [])} for c in summary
        ],
    }  # fmt: skip
    return {"run": run, "matrix": metric_matrix(run), "summary": summary, "chart_data": bars}


@role_required(*READ)
def evaluation_run(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk)
    ctx = {
        "run": run,
        "stale": run_is_stale(run),
        "is_admin": user_has_role(request.user, Role.ADMIN),
    }
    if request.htmx and request.GET.get("fragment") == "progress":
        return render(request, "evaluation/partials/progress.html", ctx)
    ctx.update(_dashboard(run))
    return render(request, "evaluation/run.html", ctx)


@role_required(Role.ADMIN)
@require_POST
def evaluation_run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk)
    try:
        eval_run_cancel(run=run, user=request.user)
    except RaftwebError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Cancelling evaluation run {run.pk}.")
    return HttpResponseRedirect(reverse("evaluation:run", args=[run.pk]))


@role_required(Role.ADMIN)
@require_POST
def evaluation_run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk)
    try:
        eval_run_resume(run=run, user=request.user)
    except RaftwebError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Evaluation run {run.pk} queued again; it resumes.")
    return HttpResponseRedirect(reverse("evaluation:run", args=[run.pk]))


@role_required(*READ)
def evaluation_cell(request: HttpRequest, pk: int, config: int, metric: str) -> HttpResponse:
    """The questions behind one cell of the matrix, failures first."""
    run = _run(request, pk)
    if metric not in METRICS or not 0 <= config < len(run.configs):
        raise Http404("No such cell.")
    results = cell_results(run, config_index=config, metric=metric)
    ctx = {"run": run, "metric": metric, "config": run.labels[config], "results": results}
    return render(request, "evaluation/cell.html", ctx)


@role_required(*READ)
def evaluation_question(request: HttpRequest, pk: int, qid: int) -> HttpResponse:
    """One question: every configuration's answer side by side, with what it retrieved, its
    quotes (checked) and the judge's reason."""
    run = _run(request, pk)
    question = get_object_or_404(EvalQuestion, run=run, pk=qid)
    columns = []
    for config, result in question_results(run, question):
        segments = answer_segments(result.answer) if result is not None else []
        checks = list(result.citations or []) if result is not None else []
        columns.append(
            {
                "config": config.get("label", ""),
                "result": result,
                "scores": (result.scores or {}) if result else {},
                "segments": [(s, s.paired(checks)) for s in segments],
            }
        )
    return render(
        request, "evaluation/question.html", {"run": run, "question": question, "columns": columns}
    )


@role_required(*READ)
def evaluation_compare(request: HttpRequest) -> HttpResponse:
    """Two runs' metrics for the configurations they share (and those only one has)."""
    runs = kb_eval_runs().filter(kb__in=kbs_visible_to(request.user))
    try:
        a = runs.filter(pk=int(request.GET.get("a", ""))).first()
        b = runs.filter(pk=int(request.GET.get("b", ""))).first()
    except ValueError:
        a = b = None
    rows: list[dict[str, Any]] = []
    if a is not None and b is not None:
        sa = {c["config"]: c["metrics"] for c in run_summary(a)}
        sb = {c["config"]: c["metrics"] for c in run_summary(b)}
        for label in [*sa, *[x for x in sb if x not in sa]]:
            for metric in METRICS:
                va, vb = sa.get(label, {}).get(metric), sb.get(label, {}).get(metric)
                delta = None if va is None or vb is None else round(vb - va, 4)
                rows.append({"config": label, "metric": metric, "a": va, "b": vb, "delta": delta})
    ctx = {"a": a, "b": b, "rows": rows, "runs": list(runs[:100])}
    return render(request, "evaluation/compare.html", ctx)


EXPORT_COLUMNS = (
    "question_id", "ordinal", "config", "question", "gold_answer", "final", "outcome", "error",
    *(
        "oracle_retrieved", "oracle_chunk_retrieved", "gold_rank", "parse_ok", "correct_reference", "quotes_total",
        "quotes_verified", "exact_match", "f1", "rouge_l", "judge_score", "judge_hard",
        "judge_soft", "judge_reason", "refusal_correct", "mcq_correct", "latency_ms",
        "completion_tokens",
    ),
)  # fmt: skip


@role_required(*READ)
def evaluation_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """Per-question results (csv) or the whole run with its summary (json)."""
    run = _run(request, pk)
    if fmt not in ("csv", "json"):
        raise Http404("Export as csv or json.")
    labels = run.labels
    results = EvalResult.objects.filter(run=run, state=EvalResult.State.DONE).select_related(
        "question"
    )
    rows = []
    for r in results:
        scores = r.scores or {}
        row = {
            "question_id": r.question_id,
            "ordinal": r.question.ordinal,
            "config": labels[r.config_index] if r.config_index < len(labels) else "",
            "question": r.question.question,
            "gold_answer": r.question.gold_answer,
            "final": r.final,
            "outcome": r.outcome,
            "error": r.error,
        }
        row.update({k: scores.get(k) for k in EXPORT_COLUMNS if k not in row})
        rows.append(row)
    name = f"evaluation-run-{run.pk}"
    if fmt == "json":
        body = {
            "run": run.pk,
            "kb": run.kb.slug,
            "source": run.source,
            "status": run.status,
            "configs": run_summary(run),
            "results": rows,
        }
        response = HttpResponse(json.dumps(body, default=str), content_type="application/json")
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for row in rows:
            # A cell starting with = + - @ is a formula to spreadsheets: quote it as text.
            writer.writerow({k: _csv_safe(v) for k, v in row.items()})
        response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@role_required(*READ)
def evaluation_report(request: HttpRequest, pk: int) -> HttpResponse:
    """A printable page: the matrix with counts, and every configuration's nulls explained."""
    run = _run(request, pk)
    return render(request, "evaluation/report.html", _dashboard(run))


@role_required(Role.ADMIN)
def evaluation_gate(request: HttpRequest, pk: int) -> HttpResponse:
    """A candidate version's deltas against the active one; activating asks for confirmation
    when a gate metric regresses. "Evaluate" queues the comparison on the eval split."""
    version = get_object_or_404(
        ModelVersion.objects.select_related("kb").filter(kb__in=kbs_visible_to(request.user)),
        pk=pk,
    )
    report = promotion_gate(version, evaluate=False)
    if request.method == "POST":
        action = request.POST.get("action", "activate")
        try:
            if action == "evaluate":
                pair = gate_pair(version)
                run = eval_run_start(
                    kb=version.kb, configs=[pair.active, pair.candidate], user=request.user
                )
                messages.success(request, f"Evaluation run {run.pk} queued.")
                return HttpResponseRedirect(reverse("evaluation:run", args=[run.pk]))
            confirmed = request.POST.get("confirm") == "1"
            done = model_version_activate(version=version, user=request.user, force=confirmed)
        except PromotionRefused as exc:
            messages.error(request, exc.message)
        except RaftwebError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                f"{version.label} is active."
                if done
                else f"{version.label} activates once its index is built.",
            )
            return HttpResponseRedirect(reverse("evaluation:gate", args=[version.pk]))
    ctx = {
        "version": version,
        "report": report,
        "regresses": bool(report and report.regressions),
        "active": active_versions(version.kb).get(version.kind),
    }
    return render(request, "evaluation/gate.html", ctx)
