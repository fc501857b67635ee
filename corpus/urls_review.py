"""Review workspace (reviewers, admins) and generation pages (admins), mounted at /review/."""

from __future__ import annotations

from django.urls import path

from corpus import views_qa, views_review

app_name = "review"

urlpatterns = [
    path("", views_review.queue, name="queue"),
    path("pair/<int:pk>/", views_review.pair_detail, name="pair"),
    path("pair/<int:pk>/history/", views_review.pair_history, name="pair_history"),
    path("history/", views_review.kb_history, name="history"),
    path("bulk/", views_review.bulk, name="bulk"),
    path("agreement/", views_review.agreement, name="agreement"),
    path("generation/", views_qa.generation_list, name="generation_list"),
    path("generation/new/", views_qa.generation_new, name="generation_new"),
    path("generation/<int:pk>/", views_qa.generation_detail, name="generation_detail"),
    path("generation/<int:pk>/cancel/", views_qa.generation_cancel, name="generation_cancel"),
    path("generation/<int:pk>/resume/", views_qa.generation_resume, name="generation_resume"),
    path("kb/<slug:slug>/dataset/", views_qa.kb_dataset, name="kb_dataset"),
    path("kb/<slug:slug>/export/", views_qa.kb_export, name="kb_export"),
    path("kb/<slug:slug>/prompts/", views_qa.kb_prompts_page, name="kb_prompts"),
]
