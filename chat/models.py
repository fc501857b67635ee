"""Conversations, their messages (with citations and cost figures) and feedback on answers."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Conversation(models.Model):
    """A private thread between one user and one knowledge base."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    kb = models.ForeignKey(
        "corpus.KnowledgeBase", on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "kb", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        PENDING = "pending"  # being generated right now
        OK = "ok"
        ERROR = "error"
        CANCELLED = "cancelled"

    class Outcome(models.TextChoices):
        ANSWERED = "answered"
        NO_CONTEXT = "no_context"  # nothing relevant was retrieved; no model call
        REFUSED = "refused"  # the model said the sources do not contain the answer
        UNPARSED = "unparsed"  # the model did not follow the RAFT format
        ERROR = "error"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    # user: the question as typed; assistant: the raw model output (reasoning + <ANSWER>:).
    content = models.TextField(blank=True)
    # assistant only ------------------------------------------------------------------
    question = models.TextField(blank=True, help_text="The stand-alone question that was searched.")
    final = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    citations = models.JSONField(default=list, blank=True)
    # [{chunk_id, document_id, document, page, score}] in prompt order: what the model saw.
    retrieved = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    outcome = models.CharField(max_length=12, choices=Outcome.choices, blank=True)
    error = models.TextField(blank=True)
    model_profile = models.CharField(max_length=20, blank=True)
    model_name = models.CharField(max_length=500, blank=True)
    model_version = models.CharField(max_length=200, blank=True)
    latency_s = models.FloatField(null=True, blank=True)
    ttft_s = models.FloatField(null=True, blank=True)
    retrieval_s = models.FloatField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"

    @property
    def is_answer(self) -> bool:
        return self.role == self.Role.ASSISTANT

    def citation_list(self) -> list[dict[str, Any]]:
        return list(self.citations or [])


class Feedback(models.Model):
    class Value(models.TextChoices):
        UP = "up"
        DOWN = "down"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    value = models.CharField(max_length=4, choices=Value.choices)
    comment = models.TextField(blank=True)
    sent_to_review = models.BooleanField(default=False)
    # The candidate pair created from this feedback (corpus QAPair id), once sent.
    qa_pair_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="chat_feedback_one_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.value} on message {self.message_id}"
