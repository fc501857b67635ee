"""Moving a knowledge base between installations: ``export_kb`` writes one ZIP file,
``import_kb`` rebuilds the KB from it elsewhere.

The file holds the KB's settings, its documents with their original files, their chunks, the
document splits, the Q&A pairs with their review history, the prompt overrides and the model
version metadata (weights are not moved: they can be many GB and live outside the database).
Vectors are not carried either: the importing installation embeds the chunks itself, through
the ordinary resumable ingestion, which finds the imported chunk rows unchanged (same text,
same hashes) and only embeds and indexes them — so chunk ids, and the pairs that point at
them, survive the move.

This lives in ``training`` because it covers model versions; it uses the corpus services
below it (the dependency direction: corpus ← training).

Layout of the file (format ``raftweb-kb``, version 1)::

    manifest.json          format, version, counts, the KB's settings, overrides, versions
    documents.jsonl        one document a line (exported ids; ``file`` names its bytes)
    chunks.jsonl           one chunk a line (``document`` = exported document id)
    pairs.jsonl            one pair a line, with its review ``events``
    files/<id><suffix>     the original uploaded files
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from corpus.generation.models import KBPromptOverrides
from corpus.knowledge.indexes import CorpusError, upload_root
from corpus.knowledge.ingestion import documents_ingest
from corpus.knowledge.services import kb_create
from corpus.knowledge.uploads import max_upload_bytes
from corpus.models import Chunk, Document, DocumentSplit, KnowledgeBase, QAPair, ReviewEvent
from raftweb.core.audit import audit
from training.models import ActiveModel, ModelVersion

FORMAT = "raftweb-kb"
FORMAT_VERSION = 1

DOCUMENT_FIELDS = (
    "name",
    "original_filename",
    "content_hash",
    "version",
    "kind",
    "status",
    "error",
    "pages",
    "size",
    "chunk_count",
    "text",
)
CHUNK_FIELDS = ("ordinal", "text", "title", "page", "start", "end", "hash", "token_count")
PAIR_FIELDS = (
    "question_index",
    "question",
    "cot_answer",
    "final_answer",
    "context_texts",
    "context_titles",
    "oracle_index",
    "oracle_text",
    "refusal",
    "split",
    "status",
    "auto_reject_reason",
    "judge_score",
    "judge_reason",
    "quote_status",
    "quote_checks",
    "parsed_ok",
    "notes",
    "source",
    "origin",
    "version",
)
VERSION_FIELDS = (
    "kind",
    "label",
    "base_model",
    "path",
    "is_adapter",
    "merged_path",
    "merge_status",
    "dataset_hash",
    "metrics",
    "embedding_version",
)


@dataclass
class PortabilityResult:
    """What an export or import moved: counts per kind, and notes for the operator."""

    kb: KnowledgeBase
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _when(value: Any) -> str | None:
    return value.isoformat() if value else None


def _parse_when(value: str | None) -> Any:
    return parse_datetime(value) if value else None


def _username(user: Any) -> str:
    return user.get_username() if user is not None else ""


def _jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        yield (json.dumps(row, ensure_ascii=False) + "\n").encode()


def _write_member(archive: zipfile.ZipFile, name: str, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with archive.open(name, "w", force_zip64=True) as out:
        for line in _jsonl(rows):
            out.write(line)
            count += 1
    return count


# ------------------------------------------------------------------------------ export


def _documents(kb: KnowledgeBase, notes: list[str]) -> Iterator[dict[str, Any]]:
    for document in kb.documents.order_by("pk").select_related("created_by").iterator():
        row = {name: getattr(document, name) for name in DOCUMENT_FIELDS}
        source = upload_root() / document.file_path
        row.update(
            id=document.pk,
            replaces=document.replaces_id,
            created_by=_username(document.created_by),
            created_at=_when(document.created_at),
            file=f"files/{document.pk}{Path(document.name).suffix[:12]}"
            if source.is_file()
            else None,
        )
        if row["file"] is None:
            notes.append(f"document {document.name!r}: its file is missing; exported without it")
        yield row


def _chunks(kb: KnowledgeBase) -> Iterator[dict[str, Any]]:
    chunks = Chunk.objects.filter(document__kb=kb).order_by("document_id", "ordinal")
    for chunk in chunks.iterator(chunk_size=1000):
        row = {name: getattr(chunk, name) for name in CHUNK_FIELDS}
        row.update(id=chunk.pk, document=chunk.document_id)
        yield row


def _pairs(kb: KnowledgeBase) -> Iterator[dict[str, Any]]:
    pairs = QAPair.objects.filter(kb=kb).order_by("pk").select_related("reviewed_by")
    for pair in pairs.iterator(chunk_size=500):
        row = {name: getattr(pair, name) for name in PAIR_FIELDS}
        events = pair.events.order_by("created_at", "pk").select_related("user")
        row.update(
            id=pair.pk,
            oracle_chunk=pair.oracle_chunk_id,
            document=pair.document_id,
            context_chunk_ids=pair.context_chunk_ids,
            reviewed_by=_username(pair.reviewed_by),
            reviewed_at=_when(pair.reviewed_at),
            created_at=_when(pair.created_at),
            events=[
                {
                    "user": _username(e.user),
                    "action": e.action,
                    "before": e.before,
                    "after": e.after,
                    "note": e.note,
                    "created_at": _when(e.created_at),
                }
                for e in events
            ],
        )
        yield row


def _manifest(kb: KnowledgeBase) -> dict[str, Any]:
    overrides = KBPromptOverrides.objects.filter(kb=kb).first()
    active = {
        a.kind: a.version.label for a in ActiveModel.objects.filter(kb=kb).select_related("version")
    }
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exported_at": _when(timezone.now()),
        "kb": {
            "slug": kb.slug,
            "name": kb.name,
            "description": kb.description,
            "chunk_size": kb.chunk_size,
            "chunk_overlap": kb.chunk_overlap,
            "embedding_model": kb.embedding_model,
            "embedding_version": kb.embedding_version,
            "allowed_groups": sorted(kb.allowed_groups.values_list("name", flat=True)),
            "created_at": _when(kb.created_at),
        },
        "prompt_overrides": overrides.overrides if overrides else {},
        "document_splits": [
            {"document": s.document_id, "split": s.split}
            for s in DocumentSplit.objects.filter(kb=kb).order_by("document_id")
        ],
        "model_versions": [
            {
                **{name: getattr(v, name) for name in VERSION_FIELDS},
                "created_at": _when(v.created_at),
            }
            for v in ModelVersion.objects.filter(kb=kb).order_by("created_at", "pk")
        ],
        "active_versions": active,
    }


def kb_export(*, kb: KnowledgeBase, path: str | Path) -> PortabilityResult:
    """Write ``kb`` to ``path`` (a ZIP file), atomically: a failure leaves no partial file and
    an existing file at ``path`` untouched."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = PortabilityResult(kb=kb)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            documents = list(_documents(kb, result.notes))
            _write_member(archive, "documents.jsonl", documents)
            stored = dict(kb.documents.values_list("pk", "file_path"))
            for row in documents:
                if row["file"]:
                    archive.write(upload_root() / stored[row["id"]], row["file"])
            counts = {
                "documents": len(documents),
                "files": sum(1 for row in documents if row["file"]),
                "chunks": _write_member(archive, "chunks.jsonl", _chunks(kb)),
                "pairs": _write_member(archive, "pairs.jsonl", _pairs(kb)),
            }
            manifest = _manifest(kb)
            counts["review_events"] = ReviewEvent.objects.filter(pair__kb=kb).count()
            counts["model_versions"] = len(manifest["model_versions"])
            manifest["counts"] = counts
            archive.writestr("manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    result.counts = counts
    audit(None, "kb.export", kb, file=out.name, **counts)
    return result


# ------------------------------------------------------------------------------ import


def _read_jsonl(archive: zipfile.ZipFile, name: str) -> Iterator[dict[str, Any]]:
    with archive.open(name) as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


def _open(path: str | Path) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    try:
        archive = zipfile.ZipFile(path)
        manifest = json.loads(archive.read("manifest.json"))
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file", code="not_found", status=404) from None
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CorpusError(f"{path} is not a RAFTweb knowledge-base export ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise CorpusError(f"{path} is not a RAFTweb knowledge-base export")
    if manifest.get("version") != FORMAT_VERSION:
        raise CorpusError(
            f"{path} is format version {manifest.get('version')}; this RAFTweb reads version "
            f"{FORMAT_VERSION}"
        )
    return archive, manifest


def _users() -> dict[str, Any]:
    return {u.get_username(): u for u in get_user_model().objects.all()}


def _store_file(kb: KnowledgeBase, data: bytes, row: dict[str, Any], written: list[Path]) -> str:
    digest = hashlib.sha256(data).hexdigest()
    if digest != row["content_hash"]:
        raise CorpusError(
            f"the file of document {row['name']!r} is damaged (its hash does not match)"
        )
    rel = Path(f"kb_{kb.pk}") / digest[:2] / f"{digest}{Path(row['name']).suffix[:12]}"
    final = upload_root() / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_file():  # the same bytes are already there (content-addressed): keep them
        return str(rel)
    tmp = final.with_name(final.name + ".part")
    written.append(tmp)
    tmp.write_bytes(data)
    tmp.replace(final)
    written.append(final)
    return str(rel)


def _import_kb_row(manifest: dict[str, Any], slug: str | None, user: Any) -> KnowledgeBase:
    meta = manifest["kb"]
    groups = []
    for name in meta.get("allowed_groups", []):
        # A restricted KB stays restricted: its groups are created (empty) where missing,
        # never dropped, which would open it to every role.
        groups.append(Group.objects.get_or_create(name=name)[0])
    kb = kb_create(
        name=meta["name"],
        slug=slug or meta["slug"],
        description=meta.get("description", ""),
        chunk_size=meta["chunk_size"],
        chunk_overlap=meta["chunk_overlap"],
        embedding_model=meta.get("embedding_model", ""),
        allowed_groups=groups,
        user=user,
    )
    if manifest.get("prompt_overrides"):
        KBPromptOverrides.objects.create(kb=kb, overrides=manifest["prompt_overrides"])
    return kb


def _import_documents(
    archive: zipfile.ZipFile,
    kb: KnowledgeBase,
    users: dict[str, Any],
    notes: list[str],
    written: list[Path],
) -> dict[int, Document]:
    """The documents, their files stored (each one listed in ``written`` as soon as it exists,
    so that a failure later removes it)."""
    documents: dict[int, Document] = {}
    replaces: dict[int, int] = {}
    for row in _read_jsonl(archive, "documents.jsonl"):
        fields = {name: row[name] for name in DOCUMENT_FIELDS}
        if row.get("file"):
            # The same limit as an upload: an export file is a ZIP, and ZIPs can be bombs.
            if archive.getinfo(row["file"]).file_size > max_upload_bytes():
                raise CorpusError(
                    f"the file of document {row['name']!r} is larger than the upload limit"
                )
            file_path = _store_file(kb, archive.read(row["file"]), row, written)
        else:
            file_path = ""
            fields.update(status=Document.Status.FAILED, error="the file was missing at export")
            notes.append(f"document {row['name']!r} came without its file: marked failed")
        if fields["status"] != Document.Status.FAILED:
            fields["status"] = Document.Status.QUEUED  # indexed here by the ingestion below
        documents[row["id"]] = Document.objects.create(
            kb=kb,
            file_path=file_path,
            created_by=users.get(row.get("created_by", "")),
            created_at=_parse_when(row.get("created_at")) or timezone.now(),
            **fields,
        )
        if row.get("replaces"):
            replaces[row["id"]] = row["replaces"]
    for new_of, old in replaces.items():
        if old in documents:
            Document.objects.filter(pk=documents[new_of].pk).update(replaces=documents[old])
    return documents


def _import_chunks(archive: zipfile.ZipFile, documents: dict[int, Document]) -> dict[int, int]:
    rows = list(_read_jsonl(archive, "chunks.jsonl"))
    created = Chunk.objects.bulk_create(
        [Chunk(document=documents[r["document"]], **{n: r[n] for n in CHUNK_FIELDS}) for r in rows],
        batch_size=500,
    )
    if not all(c.pk for c in created):  # backends that cannot return ids from bulk inserts
        by_key = {
            (c.document_id, c.ordinal): c.pk
            for c in Chunk.objects.filter(document__in=list(documents.values()))
        }
        return {r["id"]: by_key[(documents[r["document"]].pk, r["ordinal"])] for r in rows}
    return {r["id"]: c.pk for r, c in zip(rows, created, strict=True)}


def _import_pairs(
    archive: zipfile.ZipFile,
    kb: KnowledgeBase,
    documents: dict[int, Document],
    chunk_ids: dict[int, int],
    users: dict[str, Any],
) -> tuple[int, int]:
    pairs = events = 0
    for row in _read_jsonl(archive, "pairs.jsonl"):
        document = documents.get(row.get("document"))
        pair = QAPair.objects.create(
            kb=kb,
            oracle_chunk_id=chunk_ids.get(row.get("oracle_chunk")),
            document=document,
            context_chunk_ids=[
                chunk_ids.get(c) if c is not None else None for c in row["context_chunk_ids"]
            ],
            reviewed_by=users.get(row.get("reviewed_by", "")),
            reviewed_at=_parse_when(row.get("reviewed_at")),
            created_at=_parse_when(row.get("created_at")) or timezone.now(),
            **{name: row[name] for name in PAIR_FIELDS},
        )
        ReviewEvent.objects.bulk_create(
            [
                ReviewEvent(
                    pair=pair,
                    user=users.get(e.get("user", "")),
                    action=e["action"],
                    before=e.get("before", {}),
                    after=e.get("after", {}),
                    note=e.get("note", ""),
                    created_at=_parse_when(e.get("created_at")) or timezone.now(),
                )
                for e in row.get("events", [])
            ]
        )
        pairs += 1
        events += len(row.get("events", []))
    return pairs, events


def _import_versions(manifest: dict[str, Any], kb: KnowledgeBase, notes: list[str]) -> int:
    count = 0
    for row in manifest.get("model_versions", []):
        ModelVersion.objects.create(
            kb=kb,
            created_at=_parse_when(row.get("created_at")) or timezone.now(),
            **{name: row[name] for name in VERSION_FIELDS},
        )
        count += 1
    if manifest.get("active_versions"):
        # Their weights (and a tuned embedding's index) live on the old installation: the
        # KB starts on its base models until an admin activates a version whose files exist.
        active = ", ".join(f"{k}: {v}" for k, v in sorted(manifest["active_versions"].items()))
        notes.append(f"active versions were not activated ({active}); copy their files first")
    return count


def kb_import(
    *, path: str | Path, slug: str | None = None, user: Any = None, ingest: bool = True
) -> PortabilityResult:
    """Rebuild the KB exported to ``path`` under its slug (or ``slug``). The rows are created
    in one transaction; then the documents are embedded and indexed (``ingest``), reusing the
    imported chunks, so chunk ids and the pairs that point at them survive."""
    archive, manifest = _open(path)
    notes: list[str] = []
    with archive:
        target = slug or manifest["kb"]["slug"]
        if KnowledgeBase.objects.filter(slug=target).exists():
            raise CorpusError(
                f"a knowledge base with slug {target!r} already exists; import under another "
                "slug (--slug) or delete it first",
                code="conflict",
                status=409,
            )
        users = _users()
        written: list[Path] = []
        try:
            with transaction.atomic():
                kb = _import_kb_row(manifest, slug, user)
                documents = _import_documents(archive, kb, users, notes, written)
                chunk_ids = _import_chunks(archive, documents)
                for s in manifest.get("document_splits", []):
                    if s["document"] in documents:
                        DocumentSplit.objects.create(
                            kb=kb, document=documents[s["document"]], split=s["split"]
                        )
                pairs, events = _import_pairs(archive, kb, documents, chunk_ids, users)
                versions = _import_versions(manifest, kb, notes)
                counts = {
                    "documents": len(documents),
                    "chunks": len(chunk_ids),
                    "pairs": pairs,
                    "review_events": events,
                    "model_versions": versions,
                }
                audit(user, "kb.import", kb, file=Path(path).name, **counts)
        except BaseException:
            for file in written:  # the rows are gone with the transaction: so are the files
                file.unlink(missing_ok=True)
            raise
    result = PortabilityResult(kb=kb, counts=counts, notes=notes)
    if ingest:
        queued = [d.pk for d in documents.values() if d.status == Document.Status.QUEUED]
        done = documents_ingest(document_ids=queued)
        result.counts["indexed"] = sum(1 for d in done if d.status == Document.Status.READY)
        failed = [d for d in done if d.status == Document.Status.FAILED]
        notes.extend(f"document {d.name!r} failed to index: {d.error}" for d in failed)
        kept = Chunk.objects.filter(pk__in=list(chunk_ids.values())).count()
        if kept != len(chunk_ids):
            notes.append(
                f"{len(chunk_ids) - kept} chunks were re-cut by this installation's parser or "
                "chunker; pairs keep their context texts"
            )
    return result
