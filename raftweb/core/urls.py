from __future__ import annotations

from django.urls import path

from raftweb.core import views

app_name = "core"

urlpatterns = [
    path("", views.home, name="home"),
    path("account/tokens/", views.tokens, name="tokens"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
    path("settings/models/", views.profiles, name="profiles"),
    path("audit/", views.audit_log, name="audit"),
    path("settings/models/status/", views.profile_status, name="profile_status"),
    path("settings/models/<str:role>/", views.profile_edit, name="profile_edit"),
]
