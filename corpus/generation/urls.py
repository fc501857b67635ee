"""Generation pages (admins), mounted at /generation/."""

from __future__ import annotations

from django.urls import path

from corpus.generation import views

app_name = "generation"

urlpatterns = [
    path("", views.generation_list, name="list"),
    path("new/", views.generation_new, name="new"),
    path("<int:pk>/", views.generation_detail, name="detail"),
    path("<int:pk>/cancel/", views.generation_cancel, name="cancel"),
    path("<int:pk>/resume/", views.generation_resume, name="resume"),
    path("kb/<slug:slug>/prompts/", views.kb_prompts_page, name="kb_prompts"),
]
