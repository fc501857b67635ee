from __future__ import annotations

import importlib

from django.contrib.auth import views as auth_views
from django.urls import include, path

from raftweb.api import api
from raftweb.core import views as core_views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("health", core_views.health_page, name="health"),
    path("api/", api.urls),
    path("", include("raftweb.core.urls")),
]

# App URL modules are included when present, so each app owns its pages and prefixes.
for prefix, module_name in (
    ("", "corpus.urls"),
    ("review/", "corpus.urls_review"),
    ("training/", "training.urls"),
    ("chat/", "chat.urls"),
):
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        continue
    urlpatterns.append(path(prefix, include(module_name)))
