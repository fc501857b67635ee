"""Dataset models: Q&A pairs and their review history."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from corpus.knowledge.models import Chunk, Document, KnowledgeBase, Split

__all__ = ["QAPair", "ReviewEvent"]


class QAPair(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    class Source(models.TextChoices):
        GENERATED = "generated"
        IMPORTED = "imported"
        CHAT_FEEDBACK = "chat_feedback"

    class QuoteStatus(models.TextChoices):
        VERIFIED = "verified"
        UNVERIFIED = "unverified"
        NONE = "none"

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="qa_pairs")
    job = models.ForeignKey(
        "corpus.GenerationJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="pairs",
    )
    question_index = models.PositiveSmallIntegerField(null=True, blank=True)
    oracle_chunk = models.ForeignKey(
        Chunk, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    document = models.ForeignKey(
        Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    question = models.TextField()
    cot_answer = models.TextField(blank=True)
    final_answer = models.TextField(blank=True)
    # Ordered context chunk ids, with a snapshot of their texts and titles so a dataset stays
    # exportable after a document is re-uploaded and its chunks replaced.
    context_chunk_ids = models.JSONField(default=list, blank=True)
    context_texts = models.JSONField(default=list, blank=True)
    context_titles = models.JSONField(default=list, blank=True)
    oracle_index = models.PositiveSmallIntegerField(null=True, blank=True)
    oracle_text = models.TextField(blank=True)
    refusal = models.BooleanField(default=False)
    split = models.CharField(
        max_length=8, choices=Split.choices, default=Split.TRAIN, db_index=True
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    auto_reject_reason = models.CharField(max_length=100, blank=True)
    judge_score = models.PositiveSmallIntegerField(null=True, blank=True)
    judge_reason = models.TextField(blank=True)
    quote_status = models.CharField(
        max_length=12, choices=QuoteStatus.choices, default=QuoteStatus.NONE
    )
    quote_checks = models.JSONField(default=list, blank=True)
    parsed_ok = models.BooleanField(default=False)
    notes = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.GENERATED)
    # What an imported row came with that RAFTweb does not derive itself (its id, type and
    # oracle text in the RAFT reference layout): exported back unchanged.
    origin = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(
        default=1, help_text="Optimistic lock: bumped on every change."
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Row-level idempotency on top of the unit: one row per (job, chunk, question).
            models.UniqueConstraint(
                fields=["job", "oracle_chunk", "question_index"],
                condition=models.Q(job__isnull=False, question_index__isnull=False),
                name="corpus_qapair_unique_generated",
            ),
        ]
        indexes = [models.Index(fields=["kb", "status", "split"])]

    def __str__(self) -> str:
        return self.question[:80]


class ReviewEvent(models.Model):
    pair = models.ForeignKey(QAPair, on_delete=models.CASCADE, related_name="events")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=24)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
