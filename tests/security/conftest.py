"""A small but complete world of real objects for the cross-cutting security tests.

Everything is created through the apps' own services where one exists (knowledge bases,
uploads, ingestion, generation jobs, conversations, feedback, tokens), so the URLs the tests
walk point at objects exactly like the ones users create. ``text`` lets the untrusted-text tests
put a hostile payload into every free-text field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

TV_TEXT = (
    "To reset the television, hold the power button for ten seconds. "
    "The screen turns off and on again, and the factory settings are restored."
)
VAULT_TEXT = "The vault combination is kept by the security team and changes every month."


@dataclass
class World:
    users: dict[str, Any]
    tv: Any  # open knowledge base
    vault: Any  # restricted to the "vip" group
    doc: Any  # ready document in tv
    failed_doc: Any  # failed document in tv (retry target)
    chunk: Any
    vault_doc: Any
    vault_chunk: Any
    pair: Any  # pending pair in tv
    approved_pair: Any
    vault_pair: Any
    job: Any  # queued (active) generation job
    failed_job: Any  # finished-with-failure job (resume target)
    conversation: Any  # sam's, in tv
    question: Any  # sam's user message
    answer: Any  # sam's assistant message
    feedback: Any  # sam's thumbs-down on the answer
    sam_token: Any
    junk: Any  # open KB that destructive requests target, so tv's vectors stay intact
    junk_doc: Any
    raw_tokens: dict[str, str] = field(default_factory=dict)


def make_user(username: str, role: str | None, *extra_groups: str) -> Any:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from raftweb.core.services import user_create

    if role is None:
        user = get_user_model().objects.create_user(username=username, password="pw-" + username)
    else:
        user, _ = user_create(username=username, role=role, password="pw-" + username)
    for name in extra_groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def _ingested(kb: Any, name: str, text: str) -> Any:
    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload

    result = document_upload(kb=kb, name=name, chunks=[text.encode()], enqueue=False)
    return document_ingest(document_id=result.document.pk)


def build_world(text: str = "") -> World:
    """``text`` is appended to every free-text field (empty: plain, readable values)."""
    from django.contrib.auth.models import Group

    from chat.models import Message
    from chat.services import conversation_create, feedback_submit
    from corpus.generation.services import generation_job_create
    from corpus.knowledge.services import document_upload, kb_create
    from corpus.models import Document, GenerationJob, QAPair
    from raftweb.core.services import token_create

    t = text
    users = {
        "alice": make_user("alice", "admin"),
        "rita": make_user("rita", "reviewer"),
        "sam": make_user("sam", "support"),
        "mallory": make_user("mallory", None),
        # a second support agent: must never see sam's conversations
        "susan": make_user("susan", "support"),
        # a support agent in the group the vault is restricted to (positive control)
        "victor": make_user("victor", "support", "vip"),
    }
    vip = Group.objects.get(name="vip")
    alice = users["alice"]
    tv = kb_create(name="TV" + t, slug="tv", description="Television manuals" + t, user=alice)
    vault = kb_create(
        name="Vault" + t,
        slug="vault",
        description="Restricted" + t,
        allowed_groups=[vip],
        user=alice,
    )
    doc = _ingested(tv, "manual.txt", TV_TEXT + t)
    vault_doc = _ingested(vault, "vault.txt", VAULT_TEXT + t)
    junk = kb_create(name="Junk" + t, slug="junk", user=alice)
    junk_doc = _ingested(junk, "junk.txt", "Old notes about remotes and batteries." + t)
    if t:
        # Upload sanitises file names; a name can still reach the pages by other paths
        # (re-upload, import), so the stored name carries the payload too.
        Document.objects.filter(pk=doc.pk).update(name="manual" + t + ".txt")
        doc.refresh_from_db()
    failed = document_upload(
        kb=tv, name="broken.txt", chunks=[b"never parsed" + t.encode()], enqueue=False
    ).document
    Document.objects.filter(pk=failed.pk).update(
        status=Document.Status.FAILED, error="parser crashed" + t
    )
    failed.refresh_from_db()
    chunk = doc.chunks.order_by("ordinal").first()
    vault_chunk = vault_doc.chunks.order_by("ordinal").first()
    assert chunk is not None and vault_chunk is not None, "ingestion produced no chunk"

    def pair(kb: Any, d: Any, c: Any, status: str, question: str) -> Any:
        quote = c.text[:40]
        return QAPair.objects.create(
            kb=kb,
            document=d,
            oracle_chunk=c,
            question=question + t,
            cot_answer=f"Reasoning{t} ##begin_quote##{quote}##end_quote## <ANSWER>: hold it{t}",
            final_answer="hold it" + t,
            context_chunk_ids=[c.pk],
            context_texts=[c.text],
            context_titles=["Manual" + t],
            oracle_index=0,
            oracle_text=c.text,
            status=status,
            judge_score=4,
            judge_reason="Looks right" + t,
            auto_reject_reason="",
            quote_checks=[
                {"quote": quote, "verified": True, "doc_key": str(c.pk), "start": 0, "end": 40}
            ],
            notes=["note" + t],
        )

    p = pair(tv, doc, chunk, QAPair.Status.PENDING, "How do I reset the television?")
    approved = pair(tv, doc, chunk, QAPair.Status.APPROVED, "How long do I hold the button?")
    vault_p = pair(
        vault, vault_doc, vault_chunk, QAPair.Status.PENDING, "Who keeps the combination?"
    )

    job = generation_job_create(kb=tv, user=alice, config={"limit_chunks": 1}, enqueue=False)
    failed_job = generation_job_create(kb=tv, user=alice, config={"limit_chunks": 1}, enqueue=False)
    GenerationJob.objects.filter(pk=failed_job.pk).update(
        status=GenerationJob.Status.FAILED, error="teacher unreachable" + t, notes=["truncated" + t]
    )
    failed_job.refresh_from_db()

    sam = users["sam"]
    conv = conversation_create(owner=sam, kb=tv, title="Resetting" + t)
    question = Message.objects.create(
        conversation=conv, role=Message.Role.USER, content="How do I reset it?" + t
    )
    quote = chunk.text[:40]
    answer = Message.objects.create(
        conversation=conv,
        role=Message.Role.ASSISTANT,
        status=Message.Status.OK,
        outcome=Message.Outcome.ANSWERED,
        question="How do I reset it?" + t,
        content=f"Because{t} ##begin_quote##{quote}##end_quote## <ANSWER>: Hold power.{t}",
        reasoning=f"Because{t} ##begin_quote##{quote}##end_quote##",
        final="Hold power." + t,
        citations=[
            {
                "n": 1,
                "quote": quote + t,
                "verified": True,
                "document": doc.name,
                "document_id": doc.pk,
                "page": None,
                "chunk_id": str(chunk.pk),
                "start": 0,
                "end": 40,
            }
        ],
        retrieved=[
            {
                "chunk_id": chunk.pk,
                "document_id": doc.pk,
                "document": doc.name,
                "page": None,
                "score": 0.9,
            }
        ],
        model_profile="student",
        model_name="tiny" + t,
        model_version="v1" + t,
    )
    fb = feedback_submit(message=answer, user=sam, value="down", comment="Wrong button" + t)
    sam_token, _ = token_create(user=sam, name="sam's script" + t)
    raw = {name: token_create(user=u, name="matrix" + t)[1] for name, u in users.items()}
    return World(
        users=users,
        tv=tv,
        vault=vault,
        doc=doc,
        failed_doc=failed,
        chunk=chunk,
        vault_doc=vault_doc,
        vault_chunk=vault_chunk,
        pair=p,
        approved_pair=approved,
        vault_pair=vault_p,
        job=job,
        failed_job=failed_job,
        conversation=conv,
        question=question,
        answer=answer,
        feedback=fb,
        sam_token=sam_token,
        junk=junk,
        junk_doc=junk_doc,
        raw_tokens=raw,
    )


@contextmanager
def module_world_for(text: str, django_db_blocker: Any) -> Iterator[World]:
    """One world for a whole test module, inside a transaction rolled back at the end.

    Building a world ingests documents (embedding), so the tests of a module share one; each
    test runs in its own savepoint (``savepoint_world``), so what one test changes the next
    never sees.
    """
    from django.db import transaction

    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            yield build_world(text)
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@contextmanager
def savepoint_world(world: World, django_db_blocker: Any) -> Iterator[World]:
    from django.db import transaction

    with django_db_blocker.unblock():
        sid = transaction.savepoint()
        try:
            yield world
        finally:
            transaction.savepoint_rollback(sid)
            for obj in (
                world.tv,
                world.pair,
                world.job,
                world.failed_job,
                world.feedback,
                world.sam_token,
            ):
                obj.refresh_from_db()


@pytest.fixture(scope="module")
def module_world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with module_world_for("", django_db_blocker) as world:
        yield world


@pytest.fixture
def world(module_world: World, django_db_blocker: Any) -> Iterator[World]:
    """The module's plain world, in a savepoint rolled back after the test."""
    with savepoint_world(module_world, django_db_blocker) as w:
        yield w


def db_snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every app model (M2M tables included), minus bookkeeping columns that
    change on reads (last login, token last use) — so "nothing changed" means nothing."""
    from django.apps import apps

    ignored = {"last_login", "last_used_at"}
    skip_models = {"workerheartbeat"}
    snap: dict[str, list[tuple[Any, ...]]] = {}
    for label in ("auth", "core", "corpus", "chat", "training", "evaluation"):
        try:
            config = apps.get_app_config(label)
        except LookupError:
            continue
        for model in config.get_models(include_auto_created=True):
            if (
                model._meta.model_name in skip_models
                or not model._meta.managed
                or model._meta.proxy
            ):
                continue
            cols = [f.attname for f in model._meta.concrete_fields if f.attname not in ignored]
            snap[model._meta.label] = sorted(
                (
                    tuple(str(v) for v in row)
                    for row in model.objects.order_by("pk").values_list(*cols)
                ),
            )
    return snap


def snapshot_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [
        label for label in sorted(set(before) | set(after)) if before.get(label) != after.get(label)
    ]
