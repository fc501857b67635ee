"""Generation models: jobs, their per-chunk units, model-call logs, per-KB prompt overrides."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from corpus.knowledge.models import Chunk, KnowledgeBase


class KBPromptOverrides(models.Model):
    """Per-KB overrides of the prompts in :class:`raftweb.raft.prompts.PromptSet`."""

    kb = models.OneToOneField(
        KnowledgeBase, on_delete=models.CASCADE, related_name="prompt_overrides"
    )
    overrides = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)


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
    # The teacher's questions for this chunk, kept once written: a unit that failed part-way
    # resumes with the same questions and answers only those that have no row yet.
    questions = models.JSONField(default=list, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "chunk"], name="corpus_generation_unit_unique")
        ]


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
