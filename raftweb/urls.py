from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from raftweb.api import api
from raftweb.core import views as core_views

urlpatterns = [
    path("login/", core_views.LoginView.as_view(), name="login"),  # brute-force protected
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("health", core_views.health_page, name="health"),
    path("favicon.ico", core_views.favicon, name="favicon"),
    path("api/", api.urls),
    path("", include("raftweb.core.urls")),
    path("", include("corpus.knowledge.urls")),
    path("review/", include("corpus.dataset.urls")),
    path("generation/", include("corpus.generation.urls")),
    path("training/", include("training.urls")),
    path("evaluation/", include("evaluation.urls")),
    path("chat/", include("chat.urls")),
]
