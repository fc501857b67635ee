"""Evaluation runs: a question set answered by several configurations (embedding version ×
generator × retrieval mode and k), one result row per question and configuration.

Result rows are created with the run and filled by the worker one at a time, so a killed worker
resumes with the rows still pending and never answers a question twice for one configuration.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from corpus.models import KnowledgeBase


class QuestionSet(models.Model):
    """An external question set imported with ``eval_import`` (the KB's eval split needs none)."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="eval_sets")
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=500, blank=True, help_text="The imported file name.")
    items = models.JSONField(default=list, help_text="The questions, as imported.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["kb", "name"], name="evaluation_set_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.kb.slug}:{self.name}"


class EvalRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="eval_runs")
    question_set = models.ForeignKey(
        QuestionSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    source = models.CharField(max_length=300, help_text="Where the questions came from.")
    # [{"emb", "gen", "mode", "k", "label"}] in column order.
    configs = models.JSONField(default=list)
    mode = models.CharField(max_length=16, default="hybrid")
    k = models.PositiveSmallIntegerField(default=5)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    total_units = models.PositiveIntegerField(default=0)
    done_units = models.PositiveIntegerField(default=0)
    eta_seconds = models.FloatField(null=True, blank=True)
    # Why the judge gave no verdicts (unreachable, not configured); empty when it worked.
    judge_unavailable = models.TextField(blank=True)
    # Gold document names of the question set that match no document of the KB.
    gold_missing = models.JSONField(default=list, blank=True)
    # Per configuration, when the run finished: [{"config", "metrics", "counts"}].
    summary = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    notes = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["kb", "status"])]

    def __str__(self) -> str:
        return f"evaluation run {self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def percent(self) -> int:
        if not self.total_units:
            return 0
        return max(0, min(100, int(round(100 * self.done_units / self.total_units))))

    @property
    def labels(self) -> list[str]:
        return [str(c.get("label", "")) for c in self.configs]


class EvalQuestion(models.Model):
    """One question of a run, frozen when the run starts (later edits of the KB's pairs do not
    change what a finished run measured)."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="questions")
    ordinal = models.PositiveIntegerField()
    question = models.TextField()
    gold_answer = models.TextField(blank=True)
    gold_names = models.JSONField(default=list, blank=True)
    # Ids of the KB documents the gold names (or the pair's document) match; empty: none.
    gold_doc_ids = models.JSONField(default=list, blank=True)
    gold_missing = models.JSONField(default=list, blank=True)
    refusal = models.BooleanField(default=False)
    options = models.JSONField(default=list, blank=True)
    correct = models.PositiveSmallIntegerField(null=True, blank=True)
    qa_pair_id = models.IntegerField(null=True, blank=True)
    oracle_chunk_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["run", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["run", "ordinal"], name="evaluation_question_unique")
        ]


class EvalResult(models.Model):
    """One question answered by one configuration: the unit of work (pending → done)."""

    class State(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    question = models.ForeignKey(EvalQuestion, on_delete=models.CASCADE, related_name="results")
    config_index = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    status = models.CharField(max_length=16, blank=True, help_text="ok or error")
    outcome = models.CharField(max_length=16, blank=True)
    answer = models.TextField(blank=True, help_text="The model's whole answer.")
    final = models.TextField(blank=True)
    hits = models.JSONField(default=list, blank=True)
    citations = models.JSONField(default=list, blank=True)
    # raftweb.eval.scoring.QuestionScore.as_dict()
    scores = models.JSONField(default=dict, blank=True)
    generator = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "config_index", "question__ordinal"]
        constraints = [
            models.UniqueConstraint(
                fields=["question", "config_index"], name="evaluation_result_unique"
            )
        ]
        indexes = [models.Index(fields=["run", "state"])]
