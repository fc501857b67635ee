from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.staticfiles import finders
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from raftweb.core import services, throttle
from raftweb.core.forms import ModelProfileForm, TokenCreateForm
from raftweb.core.home import sections_for
from raftweb.core.models import ModelProfile
from raftweb.core.roles import Role, role_required, user_roles


def home(request: HttpRequest) -> HttpResponse:
    """Each role's starting point: the sections its apps registered (raftweb/core/home.py)."""
    context = {"roles": user_roles(request.user), "sections": sections_for(request.user)}
    return render(request, "core/home.html", context)


class LoginView(auth_views.LoginView):
    """Django's login, with brute-force protection (raftweb/core/throttle.py): too many wrong
    passwords for an account, or from one address, lock it for a while (429, Retry-After),
    even for the right password."""

    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        username = str(request.POST.get("username", ""))[:300]
        counters = throttle.login_counters(request, username)
        wait = throttle.locked_for("login", counters)
        if wait:
            return self.locked(wait)
        response = super().post(request, *args, **kwargs)
        if request.user.is_authenticated:
            # A typo or two before the right password should not count towards a lockout
            # later; the address's count stays (one's own account cannot reset it).
            for counter in counters:
                if counter.kind == "account":
                    throttle.failures_clear("login", counter)
            return response
        wait = throttle.failure_record("login", counters)
        return self.locked(wait) if wait else response

    def locked(self, wait: int) -> HttpResponse:
        context = self.get_context_data(form=self.get_form_class()(self.request))
        context["locked_message"] = (
            "Too many failed attempts to log in to this account or from your address. "
            f"Try again in {throttle.wait_text(wait)}."
        )
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(wait)
        return response


@login_not_required
def health_page(request: HttpRequest) -> HttpResponse:
    # Plain liveness for load balancers; the detailed report is /api/health.
    return JsonResponse({"status": "ok"})


@login_not_required
@require_GET
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers ask for /favicon.ico on their own (pages also link the icon), logged in or not.
    path = finders.find("favicon.svg")
    if not path:
        return HttpResponse(status=404)
    return FileResponse(open(path, "rb"), content_type="image/svg+xml")  # noqa: SIM115


@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    new_raw = None
    form = TokenCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _, new_raw = services.token_create(
            user=request.user,
            name=form.cleaned_data["name"],
            read_only=form.cleaned_data["read_only"],
        )
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


@role_required(Role.ADMIN)
def audit_log(request: HttpRequest) -> HttpResponse:
    """Who created, launched, activated or deleted what, and when (filterable, paginated)."""
    from django.core.paginator import Paginator

    from raftweb.core.audit import ACTIONS, audit_actor_names, audit_events

    filters = {k: str(request.GET.get(k, ""))[:150] for k in ("actor", "action", "kb")}
    page = Paginator(audit_events(**filters), 50).get_page(request.GET.get("page"))
    query = urlencode({k: v for k, v in filters.items() if v})
    context = {
        "page": page,
        "filters": filters,
        "filter_query": query,
        "actions": ACTIONS,
        "actors": audit_actor_names(),
    }
    template = "core/partials/audit_table.html" if request.htmx else "core/audit.html"
    return render(request, template, context)
