"""RAFT Q&A models: generation jobs and their per-chunk units, Q&A pairs, review events,
model-call logs, per-KB prompt overrides and the stable per-document split."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from corpus.models.knowledge import Chunk, Document, KnowledgeBase

__all__ = [
    "DocumentSplit",
    "GenerationJob",
    "GenerationUnit",
    "KBPromptOverrides",
    "ModelCall",
    "QAPair",
    "ReviewEvent",
]


class Split(models.TextChoices):
    TRAIN = "train"
    EVAL = "eval"


class KBPromptOverrides(models.Model):
    """Per-KB overrides of the prompts in :class:`raftweb.raft.prompts.PromptSet`."""

    kb = models.OneToOneField(
        KnowledgeBase, on_delete=models.CASCADE, related_name="prompt_overrides"
    )
    overrides = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)


class DocumentSplit(models.Model):
    """A document's split, fixed the first time it is used so eval documents never move to train."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="document_splits")
    document = models.OneToOneField(Document, on_delete=models.CASCADE, related_name="qa_split")
    split = models.CharField(max_length=8, choices=Split.choices)
    created_at = models.DateTimeField(default=timezone.now)


class GenerationJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"
        FINISHED = "finished"
        FAILED = "failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.CANCELLING)

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="generation_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    config = models.JSONField(default=dict)
    seed = models.BigIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    cancel_requested = models.BooleanField(default=False)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    chunks_failed = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0)
    rows_rejected = models.PositiveIntegerField(default=0)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    calls = models.PositiveIntegerField(default=0)
    cost = models.FloatField(default=0.0, help_text="Estimated USD from the profiles' prices.")
    # Seconds spent running (summed over resumes), for tokens/s and ETA.
    run_seconds = models.FloatField(default=0.0)
    notes = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.kb_id}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def chunks_finished(self) -> int:
        return self.chunks_done + self.chunks_failed

    @property
    def percent(self) -> int:
        return int(100 * self.chunks_finished / self.chunks_total) if self.chunks_total else 0

    @property
    def tokens_per_s(self) -> float:
        return (
            (self.tokens_in + self.tokens_out) / self.run_seconds if self.run_seconds > 0 else 0.0
        )

    @property
    def eta_seconds(self) -> float | None:
        if not self.is_active or not self.chunks_finished or self.run_seconds <= 0:
            return None
        remaining = self.chunks_total - self.chunks_finished
        return self.run_seconds / self.chunks_finished * remaining


class GenerationUnit(models.Model):
    """One chunk of one job: the unit of idempotency (done units are never redone)."""

    class State(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="units")
    chunk = models.ForeignKey(Chunk, null=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(
        max_length=8, choices=State.choices, default=State.PENDING, db_index=True
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    rows = models.PositiveSmallIntegerField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    notes = models.JSONField(default=list, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "chunk"], name="corpus_generation_unit_unique")
        ]


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
        GenerationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="pairs"
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


class ModelCall(models.Model):
    """One teacher/judge call: tokens and latency (for totals, cost and throughput)."""

    job = models.ForeignKey(
        GenerationJob, null=True, blank=True, on_delete=models.CASCADE, related_name="model_calls"
    )
    unit = models.ForeignKey(
        GenerationUnit, null=True, blank=True, on_delete=models.CASCADE, related_name="calls"
    )
    role = models.CharField(max_length=16)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_s = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
