"""Review workspace (reviewers, admins) and dataset import/export (admins), mounted at /review/.

Generation pages used to live here too; their old addresses redirect to /generation/ so
bookmarks keep working."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpResponse
from django.urls import path
from django.views.generic import RedirectView

from corpus.dataset import views, views_io
from raftweb.core.roles import Role, role_required

app_name = "review"


def _moved(to: str) -> Callable[..., HttpResponse]:
    # Admin-only like the pages they point to, so the old addresses reveal nothing more.
    view = RedirectView.as_view(pattern_name=to, permanent=True, query_string=True)
    return role_required(Role.ADMIN)(view)


urlpatterns = [
    path("", views.queue, name="queue"),
    path("pair/<int:pk>/", views.pair_detail, name="pair"),
    path("pair/<int:pk>/history/", views.pair_history, name="pair_history"),
    path("history/", views.kb_history, name="history"),
    path("bulk/", views.bulk, name="bulk"),
    path("agreement/", views.agreement, name="agreement"),
    path("kb/<slug:slug>/dataset/", views_io.kb_dataset, name="kb_dataset"),
    path("kb/<slug:slug>/export/", views_io.kb_export, name="kb_export"),
    # Old addresses of the generation pages (before they got /generation/).
    path("generation/", _moved("generation:list"), name="old_generation_list"),
    path("generation/new/", _moved("generation:new"), name="old_generation_new"),
    path("generation/<int:pk>/", _moved("generation:detail"), name="old_generation_detail"),
    path("kb/<slug:slug>/prompts/", _moved("generation:kb_prompts"), name="old_kb_prompts"),
]
