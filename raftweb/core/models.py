from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from raftweb.core.roles import PERMISSIONS


class Access(models.Model):
    """Carrier of the role permissions (no table): the role groups are built from these."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = list(PERMISSIONS.items())


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiToken(models.Model):
    """A per-user token for scripts. Only a SHA-256 of the token is stored: the raw value is
    shown once at creation. Tokens are 256-bit random, so a fast hash is enough (no
    password-style stretching needed) and lets us look a token up by its hash."""

    PREFIX = "rw_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=16, help_text="First characters, to tell tokens apart.")
    # A read-only token may only read (GET/HEAD/OPTIONS): a dashboard or a backup script can
    # hold one without being able to change or launch anything if it leaks.
    read_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def new_raw(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ModelProfile(models.Model):
    """Which model plays a role. Seeded from env vars, then edited by admins in the UI;
    read on every use so a change applies without a restart."""

    class RoleName(models.TextChoices):
        TEACHER = "teacher", "Teacher (writes Q&A)"
        JUDGE = "judge", "Judge (scores pairs and answers)"
        STUDENT = "student", "Student (generator served in chat)"
        EMBEDDING = "embedding", "Embedding"

    role = models.CharField(max_length=20, choices=RoleName.choices, unique=True)
    backend = models.CharField(max_length=40)
    model = models.CharField(max_length=500)
    base_url = models.CharField(max_length=500, blank=True)
    api_key = models.CharField(max_length=500, blank=True)
    adapter_path = models.CharField(max_length=500, blank=True)
    max_concurrency = models.PositiveIntegerField(default=8)
    timeout_s = models.FloatField(default=120.0)
    price_in_per_1k = models.DecimalField(max_digits=10, decimal_places=6, default=0)
    price_out_per_1k = models.DecimalField(max_digits=10, decimal_places=6, default=0)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["role"]

    def __str__(self) -> str:
        return f"{self.role}: {self.backend} {self.model}"


class WorkerHeartbeat(models.Model):
    """Written by each worker process so /api/health can tell a live worker from a dead one."""

    name = models.CharField(max_length=200, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class AuditEvent(models.Model):
    """One admin action (who created, launched, activated or deleted what, and when).

    The target is kept as type, id and label (not a foreign key): the record must outlive the
    object it describes, which is often deleted by the very action it records."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_events",
    )
    # Kept beside the key: a deleted user's actions still say who did them.
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=60, db_index=True)
    target_type = models.CharField(max_length=60, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=300, blank=True)
    # The knowledge base the action concerns (its slug), for filtering; empty when none.
    kb_slug = models.CharField(max_length=120, blank=True, db_index=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.actor_name or 'system'} {self.action} {self.target_type} {self.target_label}"
