"""Evaluation pages (admins; reviewers read), mounted at /evaluation/."""

from __future__ import annotations

from django.urls import path

from evaluation import views

app_name = "evaluation"

urlpatterns = [
    path("", views.evaluation_home, name="home"),
    path("kb/<slug:slug>/", views.evaluation_kb, name="kb"),
    path("runs/<int:pk>/", views.evaluation_run, name="run"),
    path("runs/<int:pk>/cancel/", views.evaluation_run_cancel, name="run_cancel"),
    path("runs/<int:pk>/resume/", views.evaluation_run_resume, name="run_resume"),
    path("runs/<int:pk>/cell/<int:config>/<str:metric>/", views.evaluation_cell, name="cell"),
    path("runs/<int:pk>/questions/<int:qid>/", views.evaluation_question, name="question"),
    path("runs/<int:pk>/export.<str:fmt>", views.evaluation_export, name="export"),
    path("runs/<int:pk>/report/", views.evaluation_report, name="report"),
    path("compare/", views.evaluation_compare, name="compare"),
    path("versions/<int:pk>/gate/", views.evaluation_gate, name="gate"),
]
