from __future__ import annotations

from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("kb/<slug:slug>/", views.kb_chat, name="kb"),
    path("kb/<slug:slug>/new/", views.conversation_new, name="new"),
    path("c/<int:conversation_id>/", views.conversation, name="conversation"),
    path("c/<int:conversation_id>/delete/", views.conversation_delete, name="delete"),
    path("m/<int:message_id>/", views.message_fragment, name="message"),
    path("m/<int:message_id>/feedback/", views.feedback, name="feedback"),
    path("source/<int:chunk_id>/", views.source, name="source"),
    path("feedback/", views.feedback_list, name="feedback_list"),
    path("feedback/<int:feedback_id>/review/", views.feedback_review, name="feedback_review"),
]
