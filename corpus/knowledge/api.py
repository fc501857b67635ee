"""Knowledge-base API: KB CRUD, documents (multipart upload), search. Full paths; mounted at /api/."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from ninja import Router, Schema

from corpus.knowledge import indexes, search, selectors, services
from corpus.knowledge.access import api_kb
from corpus.knowledge.indexes import embedding_model_name
from corpus.knowledge.uploads import (
    LimitedUploadHandler,
    UploadTooLarge,
    max_upload_bytes,
)
from corpus.models import Document, KnowledgeBase
from raftweb.api_auth import require_role
from raftweb.core.roles import Role, user_roles
from raftweb.core.throttle import UserRateThrottle
from raftweb.errors import Forbidden, Invalid, NotFound, RaftwebError

router = Router(tags=["knowledge bases"])


class KBIn(Schema):
    name: str
    slug: str = ""
    description: str = ""
    chunk_size: int = 300
    chunk_overlap: int = 30
    embedding_model: str = ""
    allowed_groups: list[str] = []


class KBPatch(Schema):
    name: str | None = None
    description: str | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    allowed_groups: list[str] | None = None


class KBOut(Schema):
    slug: str
    name: str
    description: str
    chunk_size: int
    chunk_overlap: int
    embedding_model: str
    embedding_version: str
    allowed_groups: list[str]
    documents: int
    created_at: datetime


class DocumentOut(Schema):
    id: int
    name: str
    version: int
    status: str
    progress: int
    error: str
    kind: str
    pages: int | None
    size: int
    chunk_count: int
    content_hash: str
    created_at: datetime
    updated_at: datetime  # while in progress: the ingestion's last heartbeat
    # In progress without progress for RAFTWEB_INGEST_STALE_SECONDS: POST .../retry may resume it.
    stalled: bool


class UploadFailureOut(Schema):
    name: str
    error: str
    code: str = "invalid"


class UploadOut(Schema):
    documents: list[DocumentOut]
    duplicates: list[int]
    failed: list[UploadFailureOut]


class EmbeddingVersionOut(Schema):
    version: str
    model: str
    status: str
    error: str
    active: bool


class QueuedOut(Schema):
    queued: int


class SearchIn(Schema):
    query: str
    mode: str = "hybrid"
    k: int = 5
    document_ids: list[int] | None = None
    embedding_version: str | None = None


class HitOut(Schema):
    chunk_id: str
    document_id: int
    document_name: str
    page: int | None
    text: str
    score: float
    start: int
    end: int


def _kb_out(kb: KnowledgeBase) -> dict[str, Any]:
    return {
        "slug": kb.slug,
        "name": kb.name,
        "description": kb.description,
        "chunk_size": kb.chunk_size,
        "chunk_overlap": kb.chunk_overlap,
        "embedding_model": kb.embedding_model,
        "embedding_version": kb.embedding_version,
        "allowed_groups": sorted(g.name for g in kb.allowed_groups.all()),
        "documents": kb.documents.count(),
        "created_at": kb.created_at,
    }


def _document(kb: KnowledgeBase, document_id: int) -> Document:
    doc = kb.documents.filter(pk=document_id).first()
    if doc is None:
        raise NotFound(f"No document {document_id} in {kb.slug!r}.")
    return doc


@router.get("/kbs", response=list[KBOut], summary="Knowledge bases you may use")
def kb_list(request: HttpRequest) -> list[dict[str, Any]]:
    if not user_roles(request.user):
        raise Forbidden("Your role does not allow this.")
    return [
        _kb_out(kb)
        for kb in selectors.kbs_visible_to(request.user).prefetch_related("allowed_groups")
    ]


@router.post("/kbs", response={201: KBOut}, summary="Create a knowledge base (admin)")
def kb_create(request: HttpRequest, payload: KBIn) -> tuple[int, dict[str, Any]]:
    require_role(request, Role.ADMIN)
    kb = services.kb_create(
        name=payload.name,
        slug=payload.slug,
        description=payload.description,
        chunk_size=payload.chunk_size,
        chunk_overlap=payload.chunk_overlap,
        embedding_model=payload.embedding_model,
        allowed_groups=payload.allowed_groups,
        user=request.user,
    )
    return 201, _kb_out(kb)


@router.get("/kbs/{slug}", response=KBOut)
def kb_detail(request: HttpRequest, slug: str) -> dict[str, Any]:
    return _kb_out(api_kb(request, slug))


@router.patch("/kbs/{slug}", response=KBOut, summary="Rename, describe, re-parametrise (admin)")
def kb_update(request: HttpRequest, slug: str, payload: KBPatch) -> dict[str, Any]:
    kb = api_kb(request, slug, Role.ADMIN)
    services.kb_update(kb=kb, **payload.dict(exclude_unset=True))
    return _kb_out(kb)


@router.delete(
    "/kbs/{slug}",
    response={204: None},
    summary="Delete a knowledge base and everything in it (admin)",
)
def kb_delete(request: HttpRequest, slug: str) -> tuple[int, None]:
    kb = api_kb(request, slug, Role.ADMIN)
    services.kb_delete(kb=kb)
    return 204, None


@router.post(
    "/kbs/{slug}/reindex",
    response={202: QueuedOut},
    summary="Re-chunk and re-embed every document (admin)",
)
def kb_reindex(request: HttpRequest, slug: str) -> tuple[int, dict[str, int]]:
    kb = api_kb(request, slug, Role.ADMIN)
    with transaction.atomic():
        queued = services.kb_reindex(kb=kb)
    return 202, {"queued": queued}


@router.get("/kbs/{slug}/documents", response=list[DocumentOut])
def document_list(request: HttpRequest, slug: str) -> list[Document]:
    return list(selectors.kb_documents(api_kb(request, slug, Role.ADMIN)))


_MULTIPART_FILES = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            }
        },
        "required": True,
    }
}


# The files are read inside the function (not as a ninja File parameter) so the size limit can
# be installed before the body is parsed; the schema above documents them for /api/docs.
@router.post(
    "/kbs/{slug}/documents",
    response={201: UploadOut},
    openapi_extra=_MULTIPART_FILES,
    summary="Upload files (multipart field 'files', several allowed) (admin)",
)
def document_upload(request: HttpRequest, slug: str) -> tuple[int, dict[str, Any]]:
    kb = api_kb(request, slug, Role.ADMIN)
    try:
        # Enforce the size limit while the body streams in; impossible once something (the
        # CSRF check of a session request) has parsed it — then the service's limit applies.
        request.upload_handlers.insert(0, LimitedUploadHandler(request))
    except AttributeError:
        pass
    files = request.FILES.getlist("files") or request.FILES.getlist("file")
    too_large = list(getattr(request, "too_large_uploads", []))
    if not files and not too_large:
        raise Invalid("Send one or more files in the multipart field 'files'.")
    created: list[Document] = []
    duplicates: list[int] = []
    failed = [
        {
            "name": n,
            "error": str(UploadTooLarge(max_upload_bytes())),
            "code": UploadTooLarge.default_code,
        }
        for n in too_large
    ]
    for f in files:
        try:
            with transaction.atomic():
                result = services.document_upload(
                    kb=kb, name=f.name or "upload", chunks=f.chunks(), user=request.user
                )
        except RaftwebError as exc:
            failed.append({"name": f.name or "upload", "error": exc.message, "code": exc.code})
            continue
        (created if result.created else duplicates).append(
            result.document if result.created else result.document.pk
        )
    if not created and not duplicates:
        too_big = any(f["code"] == UploadTooLarge.default_code for f in failed)
        status = UploadTooLarge.default_status if too_big else 400
        raise RaftwebError(
            "No file was accepted.",
            code="upload_rejected",
            status=status,
            details={"failed": failed},
        )
    return 201, {"documents": created, "duplicates": duplicates, "failed": failed}


@router.get("/kbs/{slug}/documents/{document_id}", response=DocumentOut)
def document_detail(request: HttpRequest, slug: str, document_id: int) -> Document:
    return _document(api_kb(request, slug, Role.ADMIN), document_id)


@router.delete("/kbs/{slug}/documents/{document_id}", response={204: None})
def document_delete(request: HttpRequest, slug: str, document_id: int) -> tuple[int, None]:
    doc = _document(api_kb(request, slug, Role.ADMIN), document_id)
    indexes.document_delete(document=doc)
    return 204, None


@router.post(
    "/kbs/{slug}/documents/{document_id}/retry",
    response={202: DocumentOut},
    summary="Queue a failed or stalled document again (409 while a worker is ingesting it)",
)
def document_retry(request: HttpRequest, slug: str, document_id: int) -> tuple[int, Document]:
    doc = _document(api_kb(request, slug, Role.ADMIN), document_id)
    with transaction.atomic():
        services.document_retry(document=doc)
    doc.refresh_from_db()
    return 202, doc


@router.post(
    "/kbs/{slug}/search",
    response=list[HitOut],
    summary="Search a knowledge base (any role allowed on it)",
    throttle=[UserRateThrottle("search")],  # RAFTWEB_RATE_SEARCH per user
)
def kb_search(request: HttpRequest, slug: str, payload: SearchIn) -> list[Any]:
    kb = api_kb(request, slug)
    limit = settings.MAX_QUERY_CHARS
    if len(payload.query) > limit:
        # Search time grows with the query; a huge one would stall search for everyone.
        raise Invalid(
            f"The query is {len(payload.query):,} characters long; the limit is {limit:,}.",
            code="too_long",
            status=422,
            details={"max_chars": limit, "chars": len(payload.query)},
        )
    hits = search.kb_search(
        kb=kb,
        query=payload.query,
        mode=payload.mode,
        k=payload.k,
        document_ids=payload.document_ids,
        embedding_version=payload.embedding_version,
    )
    return [h.as_dict() for h in hits]


@router.get(
    "/kbs/{slug}/search",
    response=list[HitOut],
    summary="Search with query parameters",
    throttle=[UserRateThrottle("search")],
)
def kb_search_get(
    request: HttpRequest, slug: str, q: str, mode: str = "hybrid", k: int = 5
) -> list[Any]:
    return kb_search(request, slug, SearchIn(query=q, mode=mode, k=k))


def _versions(kb: KnowledgeBase) -> list[dict[str, Any]]:
    return [
        {
            "version": i.version,
            "model": i.model or embedding_model_name(kb),
            "status": i.status,
            "error": i.error,
            "active": i.version == kb.embedding_version,
        }
        for i in kb.embedding_indexes.all()
    ]


@router.get(
    "/kbs/{slug}/embeddings",
    response=list[EmbeddingVersionOut],
    summary="Embedding versions indexed for this knowledge base (admin)",
)
def embedding_versions(request: HttpRequest, slug: str) -> list[dict[str, Any]]:
    return _versions(api_kb(request, slug, Role.ADMIN))


@router.post(
    "/kbs/{slug}/embeddings/{version}/activate",
    response=list[EmbeddingVersionOut],
    summary="Make an embedding version the one search uses by default (admin)",
)
def embedding_activate(request: HttpRequest, slug: str, version: str) -> list[dict[str, Any]]:
    kb = api_kb(request, slug, Role.ADMIN)
    services.kb_embedding_activate(kb=kb, version=version)
    return _versions(kb)
