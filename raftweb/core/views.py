from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from raftweb.core import services
from raftweb.core.forms import ModelProfileForm, TokenCreateForm
from raftweb.core.models import ModelProfile
from raftweb.core.roles import Role, role_required, user_roles


def home(request: HttpRequest) -> HttpResponse:
    roles = user_roles(request.user)
    return render(request, "core/home.html", {"roles": roles, "Role": Role})


@login_not_required
def health_page(request: HttpRequest) -> HttpResponse:
    # Plain liveness for load balancers; the detailed report is /api/health.
    return JsonResponse({"status": "ok"})


@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    new_raw = None
    form = TokenCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _, new_raw = services.token_create(user=request.user, name=form.cleaned_data["name"])
        messages.success(request, "Token created. Copy it now: it is not shown again.")
        form = TokenCreateForm()
    context = {"form": form, "tokens": request.user.api_tokens.all(), "new_raw": new_raw}
    template = "core/partials/tokens.html" if request.htmx else "core/tokens.html"
    return render(request, template, context)


@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token = services.token_revoke(user=request.user, token_id=token_id)
        messages.success(request, f"Token “{token.name}” revoked.")
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect("core:tokens")


@role_required(Role.ADMIN)
def profiles(request: HttpRequest) -> HttpResponse:
    return render(request, "core/profiles.html", {"profiles": services.profiles_ensure()})


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def profile_edit(request: HttpRequest, role: str) -> HttpResponse:
    from raftweb.llm import available_backends

    profile = services.profile_get(role) if role in ModelProfile.RoleName.values else None
    if profile is None:
        return render(request, "404.html", status=404)
    backends = ["sentence-transformers"] if role == "embedding" else list(available_backends())
    stored_key = profile.api_key
    form = ModelProfileForm(request.POST or None, instance=profile, backends=backends)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields}
        if not fields["api_key"]:
            fields["api_key"] = "" if form.cleaned_data["clear_api_key"] else stored_key
        try:
            services.profile_update(role=role, user=request.user, **fields)
        except services.ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, f"Model profile “{role}” saved; it applies from the next request."
            )
            return redirect("core:profiles")
    return render(request, "core/profile_edit.html", {"form": form, "profile": profile})


@role_required(Role.ADMIN)
def profile_status(request: HttpRequest) -> HttpResponse:
    """Fragment with live model availability (loaded lazily by htmx: checks can take seconds)."""
    from asgiref.sync import async_to_sync

    from raftweb.core.health import check_models

    checks = async_to_sync(check_models)()
    return render(request, "core/partials/profile_status.html", {"checks": checks})
