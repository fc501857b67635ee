"""Knowledge bases, their documents and chunks, and the embedding indexes built over them."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

BASE_VERSION = "base"


def new_index_key() -> str:
    return uuid.uuid4().hex[:16]


class KnowledgeBase(models.Model):
    slug = models.SlugField(max_length=80, unique=True)
    # Names this KB's on-disk/vector indexes; never reused, unlike primary keys.
    index_key = models.CharField(max_length=32, unique=True, default=new_index_key, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    chunk_size = models.PositiveIntegerField(
        default=300, help_text="Tokens per chunk (embedding tokenizer)."
    )
    chunk_overlap = models.PositiveIntegerField(
        default=30, help_text="Tokens shared by neighbouring chunks."
    )
    # Empty = the 'embedding' model profile. Fixed per KB once documents are indexed.
    embedding_model = models.CharField(max_length=500, blank=True)
    # The embedding version search uses by default ("base" or a tuned version's label).
    embedding_version = models.CharField(max_length=100, default=BASE_VERSION)
    # Empty = open to every role; otherwise only members of these groups (and admins) see it.
    allowed_groups = models.ManyToManyField(Group, blank=True, related_name="knowledge_bases")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class EmbeddingIndex(models.Model):
    """One Chroma collection: the KB's chunks embedded by one model (a "version")."""

    class Status(models.TextChoices):
        BUILDING = "building"
        READY = "ready"
        FAILED = "failed"

    kb = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="embedding_indexes"
    )
    version = models.CharField(max_length=100)
    model = models.CharField(
        max_length=500, help_text="sentence-transformers model id or local path"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kb", "version"], name="corpus_embedding_index_unique")
        ]
        ordering = ["kb", "created_at"]

    def __str__(self) -> str:
        return f"{self.kb.slug}:{self.version}"


class Document(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        PARSING = "parsing"
        EMBEDDING = "embedding"
        READY = "ready"
        FAILED = "failed"

    IN_PROGRESS = (Status.QUEUED, Status.PARSING, Status.EMBEDDING)

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    name = models.CharField(max_length=255, help_text="Sanitized original file name.")
    original_filename = models.CharField(max_length=255)
    file_path = models.CharField(max_length=500, help_text="Relative to MEDIA_ROOT.")
    content_hash = models.CharField(max_length=64)
    version = models.PositiveIntegerField(default=1)
    # The previous version of this file; deleted once this one is ready.
    replaces = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    error = models.TextField(blank=True)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent.")
    pages = models.PositiveIntegerField(null=True, blank=True)
    size = models.BigIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    # The parsed text (sections joined by a blank line); chunk offsets index into it.
    text = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            # The same bytes are indexed once per KB, even when uploaded twice at the same moment.
            models.UniqueConstraint(
                fields=["kb", "content_hash"], name="corpus_document_unique_hash"
            ),
            models.UniqueConstraint(
                fields=["kb", "name", "version"], name="corpus_document_unique_version"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS

    @property
    def stalled(self) -> bool:
        """In progress with no progress for RAFTWEB_INGEST_STALE_SECONDS: its worker is probably
        gone, so the page offers Retry (``document_retry`` decides, and says why not)."""
        return self.in_progress and timezone.now() - self.updated_at >= timedelta(
            seconds=settings.INGEST_STALE_S
        )

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name


class Chunk(models.Model):
    """A slice of a document's parsed text; ``str(pk)`` is its id in Chroma and BM25."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    title = models.CharField(
        max_length=300, blank=True, help_text="Section title indexed with the chunk."
    )
    page = models.PositiveIntegerField(null=True, blank=True)
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    hash = models.CharField(max_length=64)
    token_count = models.PositiveIntegerField(default=0)
    # Embedded into the KB's base index (resumable ingestion skips these).
    embedded = models.BooleanField(default=False)

    class Meta:
        ordering = ["document", "ordinal"]
        constraints = [
            models.UniqueConstraint(
                fields=["document", "ordinal"], name="corpus_chunk_unique_ordinal"
            )
        ]

    def __str__(self) -> str:
        return f"{self.document.name}#{self.ordinal}"

    @property
    def chunk_id(self) -> str:
        return str(self.pk)

    @property
    def index_text(self) -> str:
        if self.title and not self.text.lstrip().startswith(self.title):
            return f"{self.title}\n{self.text}"
        return self.text


class Split(models.TextChoices):
    TRAIN = "train"
    EVAL = "eval"


class DocumentSplit(models.Model):
    """A document's split, fixed the first time it is used so eval documents never move to train."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="document_splits")
    document = models.OneToOneField(Document, on_delete=models.CASCADE, related_name="qa_split")
    split = models.CharField(max_length=8, choices=Split.choices)
    created_at = models.DateTimeField(default=timezone.now)
