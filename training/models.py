"""Fine-tuning: training runs (and the metrics tailed from them), the model versions they
produce, and each knowledge base's active generator and embedding version.

A run is trained by a subprocess of the worker in its own directory (the contract is in
:mod:`raftweb.train`); the rows here are what the worker reads back from that directory.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from corpus.models import KnowledgeBase


class ModelKind(models.TextChoices):
    GENERATOR = "generator"
    EMBEDDING = "embedding"


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="training_runs")
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    method = models.CharField(max_length=16, blank=True, help_text="lora, qlora or full.")
    preset = models.CharField(max_length=100, blank=True)
    # The resolved typed config (preset and overrides applied), as written to config.json.
    config = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    cancel_requested = models.BooleanField(default=False)
    # Make the resulting version the KB's active one as soon as the run succeeds.
    activate_on_success = models.BooleanField(default=False)
    run_dir = models.CharField(max_length=1000, blank=True)
    # The training process of the current attempt, and the host it runs on (a stale run's
    # process is only looked for on the same host).
    pid = models.IntegerField(null=True, blank=True)
    worker_host = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Processes started so far.")
    # Set by each claim: a worker writes only while the run still carries its token, so a
    # worker that was taken for dead (and replaced) cannot overwrite its successor.
    claim_token = models.CharField(max_length=32, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0, help_text="0..1")
    eta_seconds = models.FloatField(null=True, blank=True)
    # How far metrics.jsonl has been read: complete lines only, so a half-written last line
    # is read whole on the next poll.
    metrics_offset = models.BigIntegerField(default=0)
    metrics_lines = models.PositiveIntegerField(default=0)
    # The script's done event, kept once read so a worker that dies before finishing the run
    # does not need the script again.
    done_event = models.JSONField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Final metrics.")
    error = models.TextField(blank=True)
    notes = models.JSONField(default=list, blank=True)
    # sha256 over the data files written for the run (what exactly it was trained on).
    data_hash = models.CharField(max_length=64, blank=True)
    rows_train = models.PositiveIntegerField(default=0)
    rows_eval = models.PositiveIntegerField(default=0)
    rows_from_feedback = models.PositiveIntegerField(default=0)
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
        return f"training run {self.pk} ({self.kind}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def percent(self) -> int:
        return max(0, min(100, int(round(self.progress * 100))))


class TrainingMetric(models.Model):
    """One line of a run's metrics.jsonl; ``line`` (0-based) makes tailing idempotent."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metric_rows")
    line = models.PositiveIntegerField()
    event = models.CharField(max_length=32)
    step = models.PositiveIntegerField(null=True, blank=True)
    values = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "line"]
        constraints = [
            models.UniqueConstraint(fields=["run", "line"], name="training_metric_unique_line")
        ]


class MergeStatus(models.TextChoices):
    NONE = "", "not merged"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ModelVersion(models.Model):
    """A trained model: a peft adapter or full weights (generator), or a sentence-transformers
    model (embedding, also indexed as the KB embedding version ``embedding_version``)."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="model_versions")
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    label = models.CharField(max_length=100)
    base_model = models.CharField(max_length=500, blank=True)
    path = models.CharField(max_length=1000, help_text="The adapter or model folder.")
    is_adapter = models.BooleanField(default=False)
    # Merging an adapter into its base (optional, done by the worker): one full model to serve.
    merged_path = models.CharField(
        max_length=1000, blank=True, help_text="The adapter merged into its base (optional)."
    )
    merge_status = models.CharField(
        max_length=16, choices=MergeStatus.choices, default=MergeStatus.NONE, blank=True
    )
    merge_error = models.TextField(blank=True)
    # One version per run: the worker creates it idempotently when the run ends.
    run = models.OneToOneField(
        TrainingRun,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="model_version",
    )
    dataset_hash = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # Embedding versions: the EmbeddingIndex version the tuned model is indexed under.
    embedding_version = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["kb", "label"], name="training_version_unique_label")
        ]

    def __str__(self) -> str:
        return f"{self.kb.slug}:{self.label}"


class ActiveModel(models.Model):
    """The version a KB uses for one kind: at most one generator and one embedding per KB.

    No row means the base model. Read it through
    :func:`training.selectors.active_version`, which also checks an embedding version against
    the KB's current embedding index (the corpus pages can switch that back to base)."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="active_models")
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kb", "kind"], name="training_active_model_unique")
        ]
