from __future__ import annotations

from django.urls import path

from corpus.knowledge import views

app_name = "corpus"

urlpatterns = [
    path("kb/", views.kb_list, name="kb_list"),
    path("kb/new/", views.kb_create, name="kb_create"),
    path("kb/<slug:slug>/", views.kb_detail, name="kb_detail"),
    path("kb/<slug:slug>/edit/", views.kb_edit, name="kb_edit"),
    path("kb/<slug:slug>/delete/", views.kb_delete, name="kb_delete"),
    path("kb/<slug:slug>/upload/", views.kb_upload, name="kb_upload"),
    path("kb/<slug:slug>/reindex/", views.kb_reindex, name="kb_reindex"),
    path("kb/<slug:slug>/search/", views.kb_search, name="kb_search"),
    path(
        "kb/<slug:slug>/embeddings/activate/",
        views.kb_embedding_activate,
        name="kb_embedding_activate",
    ),
    path("kb/<slug:slug>/documents/<int:pk>/", views.document_detail, name="document_detail"),
    path(
        "kb/<slug:slug>/documents/<int:pk>/delete/", views.document_delete, name="document_delete"
    ),
    path("kb/<slug:slug>/documents/<int:pk>/retry/", views.document_retry, name="document_retry"),
]
