"""Training pages (admins), mounted at /training/."""

from __future__ import annotations

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("", views.training_home, name="home"),
    path("kb/<slug:slug>/", views.training_kb, name="kb"),
    path("runs/<int:pk>/", views.training_run_detail, name="run"),
    path("runs/<int:pk>/cancel/", views.training_run_cancel_view, name="run_cancel"),
    path("runs/<int:pk>/resume/", views.training_run_resume_view, name="run_resume"),
    path("versions/<int:pk>/activate/", views.model_version_activate_view, name="version_activate"),
    path("versions/<int:pk>/merge/", views.model_version_merge_view, name="version_merge"),
]
