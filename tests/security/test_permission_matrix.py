"""Cross-cutting permission matrix: every page URL and every API operation, every role.

The page list comes from the URL resolver and the API list from the OpenAPI schema, so a URL
or operation added later without an entry in PAGES / API_OPS fails
``test_it_knows_every_...`` — a new view cannot ship without someone stating who may use it.

Who is who (tests/security/conftest.py): alice admin, rita reviewer, sam support (owns the
conversation, message, feedback and token used in URLs), susan support (not the owner),
victor support + the "vip" group the vault KB is restricted to, mallory logged in without a
role, anon not logged in.

The intended rules, read from the views (raftweb/core/roles.py, */views*.py):
- admin: every page, except other users' conversations (private even to admins: 404);
- reviewer: the review workspace (queue, pair, history, bulk, agreement) on KBs visible to them;
  generation, dataset import/export and prompt pages are admin-only (views_qa: "admin");
- support: chat pages, their own conversations only (someone else's is a 404, never a 403);
- no role: home and their own API tokens only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.security.conftest import World, db_snapshot, snapshot_diff

# The module shares one world (see conftest.module_world); the mark makes pytest-django create
# the test database and wrap each test in a transaction of its own.
pytestmark = pytest.mark.django_db

USERS = ("alice", "rita", "sam", "susan", "victor", "mallory")
ADMIN = frozenset({"alice"})
REVIEW = frozenset({"alice", "rita"})
CHAT = frozenset({"alice", "sam", "susan", "victor"})
OWNER = frozenset({"sam"})
ANY = frozenset(USERS)
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Page:
    """One page URL: how to fill it, and what each user gets from a GET and a POST."""

    kwargs: Callable[[World], dict[str, Any]] = lambda w: {}
    # GET status per user; users not listed get ``denied``.
    allowed: frozenset[str] = NONE
    ok: int = 200
    denied: int = 403
    overrides: dict[str, int] = field(default_factory=dict)
    # State-changing POST: form data (and files) that really changes something when the user
    # is allowed — checked by the positive control — and ``post_allowed`` who may.
    post: Callable[[World], dict[str, Any]] | None = None
    post_allowed: frozenset[str] = NONE
    public: bool = False  # reachable without logging in

    def expected_get(self, user: str) -> int:
        if user in self.overrides:
            return self.overrides[user]
        return self.ok if user in self.allowed else self.denied


def _kb(w: World) -> dict[str, Any]:
    return {"slug": w.tv.slug}


def _doc(w: World) -> dict[str, Any]:
    return {"slug": w.tv.slug, "pk": w.doc.pk}


# Destructive requests (delete, re-index) target the junk KB: the positive controls really
# drop vectors, which a database rollback does not bring back.
def _junk(w: World) -> dict[str, Any]:
    return {"slug": w.junk.slug}


def _junk_doc(w: World) -> dict[str, Any]:
    return {"slug": w.junk.slug, "pk": w.junk_doc.pk}


def _generation_form(w: World) -> dict[str, Any]:
    from corpus.generation.views import GenerationForm

    form = GenerationForm()
    data = {name: f.initial for name, f in form.fields.items() if f.initial is not None}
    data.update(kb=w.tv.slug, limit_chunks=1, document_ids="")
    return {k: ("on" if v is True else v) for k, v in data.items() if v is not False}


def _prompt_override(w: World) -> dict[str, Any]:
    from raftweb.raft.prompts import PromptSet

    name = next(iter(PromptSet().as_dict()))
    return {name: "A custom prompt for this knowledge base."}


def _pairs_file(w: World) -> dict[str, Any]:
    body = json.dumps({"question": "Imported question?", "answer": "Imported answer."}) + "\n"
    return {
        "file": SimpleUploadedFile("pairs.jsonl", body.encode(), "application/x-ndjson"),
        "status": "pending",
    }


# Training objects of the module's world (see training_world below): a queued run (the cancel
# target), a failed run (the resume target) and a generator adapter version (activate, merge).
TRAINING: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def training_world(module_world: World, django_db_blocker: Any) -> None:
    from training.models import ModelVersion, TrainingRun
    from training.services import training_run_start

    with django_db_blocker.unblock():
        tv = module_world.tv
        TRAINING["run"] = training_run_start(kb=tv, kind="generator", enqueue=False)
        failed = training_run_start(kb=tv, kind="generator", enqueue=False)
        TrainingRun.objects.filter(pk=failed.pk).update(status="failed", error="crashed")
        TRAINING["failed_run"] = failed
        TRAINING["version"] = ModelVersion.objects.create(
            kb=tv,
            kind="generator",
            label="matrix-adapter",
            path="/nonexistent/adapter",
            is_adapter=True,
            base_model="tiny",
        )


# Evaluation objects: a queued run with one answered question (pages, cancel), a failed run
# (resume) and an imported question set (what the start-run POSTs evaluate).
EVAL: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def evaluation_world(module_world: World, django_db_blocker: Any) -> None:
    from evaluation.models import EvalQuestion, EvalResult, EvalRun, QuestionSet

    with django_db_blocker.unblock():
        tv = module_world.tv
        configs = [
            {"emb": "base", "gen": "base", "mode": None, "k": None, "label": "emb=base,gen=base"}
        ]
        run = EvalRun.objects.create(kb=tv, source="eval split", configs=configs, total_units=1)
        question = EvalQuestion.objects.create(run=run, ordinal=0, question="Q?", gold_answer="A")
        EvalResult.objects.create(
            run=run, question=question, config_index=0, state="done", status="ok",
            answer="<ANSWER>: A", final="A", scores={"parse_ok": True},
        )  # fmt: skip
        EVAL["run"], EVAL["question"] = run, question
        EVAL["failed_run"] = EvalRun.objects.create(
            kb=tv, source="eval split", configs=configs, status="failed", error="crashed"
        )
        EVAL["set"] = QuestionSet.objects.create(
            kb=tv, name="matrix-set", items=[{"question": "Q?", "answer": "A"}]
        )


def _eval_run(w: World) -> dict[str, Any]:
    return {"pk": EVAL["run"].pk}


def _training_run(w: World) -> dict[str, Any]:
    return {"pk": TRAINING["run"].pk}


def _training_version(w: World) -> dict[str, Any]:
    return {"pk": TRAINING["version"].pk}


PAGES: dict[str, Page] = {
    # --- public / account ------------------------------------------------------------------
    "login": Page(public=True, allowed=NONE, denied=302),  # logged in: redirected away
    "logout": Page(allowed=ANY, ok=405),  # GET is not allowed; POST logs out (no data change)
    "health": Page(public=True, allowed=ANY),
    "favicon": Page(public=True, allowed=ANY),
    "core:home": Page(allowed=ANY),
    "core:tokens": Page(allowed=ANY, post=lambda w: {"name": "new token"}, post_allowed=ANY),
    "core:token_revoke": Page(
        kwargs=lambda w: {"token_id": w.sam_token.pk},
        allowed=ANY,
        ok=405,
        post=lambda w: {},
        post_allowed=OWNER,
    ),
    # --- model settings (admin) -------------------------------------------------------------
    "core:profiles": Page(allowed=ADMIN),
    "core:profile_status": Page(allowed=ADMIN),
    "core:audit": Page(allowed=ADMIN),
    "core:profile_edit": Page(
        kwargs=lambda w: {"role": "student"},
        allowed=ADMIN,
        post=lambda w: {
            "backend": "openai",
            "model": "changed",
            "base_url": "http://127.0.0.1:9/v1",
            "max_concurrency": 2,
            "timeout_s": 5,
            "price_in_per_1k": 0,
            "price_out_per_1k": 0,
        },
        post_allowed=ADMIN,
    ),
    # --- knowledge bases (admin) ------------------------------------------------------------
    "corpus:kb_list": Page(allowed=ADMIN),
    "corpus:kb_create": Page(
        allowed=ADMIN,
        post=lambda w: {"name": "Created", "chunk_size": 300, "chunk_overlap": 30},
        post_allowed=ADMIN,
    ),
    "corpus:kb_detail": Page(kwargs=_kb, allowed=ADMIN),
    "corpus:kb_edit": Page(
        kwargs=_kb,
        allowed=ADMIN,
        post=lambda w: {
            "name": "Renamed",
            "description": "",
            "chunk_size": 300,
            "chunk_overlap": 30,
        },
        post_allowed=ADMIN,
    ),
    "corpus:kb_delete": Page(kwargs=_junk, allowed=ADMIN, post=lambda w: {}, post_allowed=ADMIN),
    "corpus:kb_upload": Page(
        kwargs=_kb,
        allowed=ADMIN,
        ok=405,
        post=lambda w: {
            "files": SimpleUploadedFile("new.txt", b"A brand new document about remotes.")
        },
        post_allowed=ADMIN,
    ),
    "corpus:kb_reindex": Page(
        kwargs=_junk, allowed=ADMIN, ok=405, post=lambda w: {}, post_allowed=ADMIN
    ),
    "corpus:kb_embedding_activate": Page(kwargs=_junk, allowed=ADMIN, ok=405),
    "corpus:kb_search": Page(kwargs=_kb, allowed=ADMIN),
    "corpus:document_detail": Page(kwargs=_doc, allowed=ADMIN),
    "corpus:document_delete": Page(
        kwargs=_junk_doc, allowed=ADMIN, ok=405, post=lambda w: {}, post_allowed=ADMIN
    ),
    "corpus:document_retry": Page(
        kwargs=lambda w: {"slug": w.tv.slug, "pk": w.failed_doc.pk},
        allowed=ADMIN,
        ok=405,
        post=lambda w: {},
        post_allowed=ADMIN,
    ),
    # --- review workspace (reviewer, admin) -------------------------------------------------
    "review:queue": Page(allowed=REVIEW),
    "review:pair": Page(
        kwargs=lambda w: {"pk": w.pair.pk},
        allowed=REVIEW,
        post=lambda w: {"action": "approve", "version": w.pair.version, "advance": "0"},
        post_allowed=REVIEW,
    ),
    "review:pair_history": Page(kwargs=lambda w: {"pk": w.pair.pk}, allowed=REVIEW),
    "review:history": Page(allowed=REVIEW),
    "review:bulk": Page(
        allowed=REVIEW,
        ok=405,
        post=lambda w: {"kb": w.tv.slug, "action": "approve"},
        post_allowed=REVIEW,
    ),
    "review:agreement": Page(allowed=REVIEW),
    # --- generation, dataset, prompts (admin only) ------------------------------------------
    "generation:list": Page(allowed=ADMIN),
    # The generation pages' old addresses under /review/ redirect (admins only, like them).
    "review:old_generation_list": Page(allowed=ADMIN, ok=301),
    "review:old_generation_new": Page(allowed=ADMIN, ok=301),
    "review:old_generation_detail": Page(kwargs=lambda w: {"pk": w.job.pk}, allowed=ADMIN, ok=301),
    "review:old_kb_prompts": Page(kwargs=_kb, allowed=ADMIN, ok=301),
    "generation:new": Page(allowed=ADMIN, post=_generation_form, post_allowed=ADMIN),
    "generation:detail": Page(kwargs=lambda w: {"pk": w.job.pk}, allowed=ADMIN),
    "generation:cancel": Page(
        kwargs=lambda w: {"pk": w.job.pk},
        allowed=ADMIN,
        ok=405,
        post=lambda w: {},
        post_allowed=ADMIN,
    ),
    "generation:resume": Page(
        kwargs=lambda w: {"pk": w.failed_job.pk},
        allowed=ADMIN,
        ok=405,
        post=lambda w: {},
        post_allowed=ADMIN,
    ),
    "review:kb_dataset": Page(kwargs=_kb, allowed=ADMIN, post=_pairs_file, post_allowed=ADMIN),
    "review:kb_export": Page(kwargs=_kb, allowed=ADMIN),
    "generation:kb_prompts": Page(
        kwargs=_kb, allowed=ADMIN, post=_prompt_override, post_allowed=ADMIN
    ),
    # --- chat (support, admin) --------------------------------------------------------------
    "chat:home": Page(allowed=CHAT),
    "chat:kb": Page(kwargs=_kb, allowed=CHAT),
    # require_POST runs before the role check: everyone logged in gets 405 on GET
    "chat:new": Page(kwargs=_kb, allowed=ANY, ok=405, post=lambda w: {}, post_allowed=CHAT),
    # sam's conversation: other chat users get the same 404 as for a missing one
    "chat:conversation": Page(
        kwargs=lambda w: {"conversation_id": w.conversation.pk},
        allowed=OWNER,
        denied=403,
        overrides={"alice": 404, "susan": 404, "victor": 404},
    ),
    "chat:delete": Page(
        kwargs=lambda w: {"conversation_id": w.conversation.pk},
        allowed=ANY,
        ok=405,
        post=lambda w: {},
        post_allowed=OWNER,
    ),
    "chat:message": Page(
        kwargs=lambda w: {"message_id": w.answer.pk},
        allowed=OWNER,
        overrides={"alice": 404, "susan": 404, "victor": 404},
    ),
    "chat:feedback": Page(
        kwargs=lambda w: {"message_id": w.answer.pk},
        allowed=ANY,
        ok=405,
        post=lambda w: {"value": "up", "comment": "changed my mind"},
        post_allowed=OWNER,
    ),
    "chat:source": Page(kwargs=lambda w: {"chunk_id": w.chunk.pk}, allowed=CHAT),
    "chat:feedback_list": Page(allowed=ADMIN),
    "chat:feedback_review": Page(
        kwargs=lambda w: {"feedback_id": w.feedback.pk},
        allowed=ANY,
        ok=405,
        post=lambda w: {},
        post_allowed=ADMIN,
    ),
    # --- training (admin only) ----------------------------------------------------------------
    "training:home": Page(allowed=ADMIN),
    "training:kb": Page(
        kwargs=_kb, allowed=ADMIN, post=lambda w: {"kind": "generator"}, post_allowed=ADMIN
    ),
    "training:run": Page(kwargs=_training_run, allowed=ADMIN),
    "training:run_cancel": Page(
        kwargs=_training_run, allowed=ADMIN, ok=405, post=lambda w: {}, post_allowed=ADMIN
    ),
    "training:run_resume": Page(
        kwargs=lambda w: {"pk": TRAINING["failed_run"].pk},
        allowed=ADMIN,
        ok=405,
        post=lambda w: {},
        post_allowed=ADMIN,
    ),
    "training:version_activate": Page(
        kwargs=_training_version, allowed=ADMIN, ok=405, post=lambda w: {}, post_allowed=ADMIN
    ),
    "training:version_merge": Page(
        kwargs=_training_version, allowed=ADMIN, ok=405, post=lambda w: {}, post_allowed=ADMIN
    ),
    # --- evaluation (admins act; reviewers read) ------------------------------------------------
    "evaluation:home": Page(allowed=REVIEW),
    "evaluation:kb": Page(
        kwargs=_kb,
        allowed=REVIEW,
        post=lambda w: {
            "configs": "emb=base,gen=base",
            "question_set": str(EVAL["set"].pk),
            "mode": "bm25",
            "k": "3",
        },
        post_allowed=ADMIN,
    ),
    "evaluation:run": Page(kwargs=_eval_run, allowed=REVIEW),
    "evaluation:run_cancel": Page(
        kwargs=_eval_run, allowed=ADMIN, ok=405, post=lambda w: {}, post_allowed=ADMIN
    ),
    "evaluation:run_resume": Page(
        kwargs=lambda w: {"pk": EVAL["failed_run"].pk},
        allowed=ADMIN,
        ok=405,
        post=lambda w: {},
        post_allowed=ADMIN,
    ),
    "evaluation:cell": Page(
        kwargs=lambda w: {"pk": EVAL["run"].pk, "config": 0, "metric": "parse_success"},
        allowed=REVIEW,
    ),
    "evaluation:question": Page(
        kwargs=lambda w: {"pk": EVAL["run"].pk, "qid": EVAL["question"].pk}, allowed=REVIEW
    ),
    "evaluation:export": Page(
        kwargs=lambda w: {"pk": EVAL["run"].pk, "fmt": "csv"}, allowed=REVIEW
    ),
    "evaluation:report": Page(kwargs=_eval_run, allowed=REVIEW),
    "evaluation:compare": Page(allowed=REVIEW),
    "evaluation:gate": Page(
        kwargs=_training_version,
        allowed=ADMIN,
        post=lambda w: {"action": "activate", "confirm": "1"},
        post_allowed=ADMIN,
    ),
}


def page_patterns() -> dict[str, str]:
    """name → route of every URL pattern outside the API, walked from the root resolver."""
    found: dict[str, str] = {}

    def walk(resolver: URLResolver, prefix: str, namespaces: tuple[str, ...]) -> None:
        for p in resolver.url_patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                ns = namespaces + ((p.namespace,) if p.namespace else ())
                walk(p, route, ns)
            elif isinstance(p, URLPattern):
                if route.startswith("api/"):
                    continue  # the ninja API is covered operation by operation below
                name = ":".join(namespaces + (p.name or f"<unnamed {route}>",))
                found[name] = route

    walk(get_resolver(), "", ())
    return found


def url_for(name: str, w: World) -> str:
    return reverse(name, kwargs=PAGES[name].kwargs(w))


def clients(w: World) -> dict[str, Client]:
    out = {"anon": Client()}
    for name in USERS:
        c = Client()
        c.force_login(w.users[name])
        out[name] = c
    return out


def test_it_knows_every_page_url() -> None:
    patterns = page_patterns()
    unknown = sorted(set(patterns) - set(PAGES))
    assert not unknown, (
        f"New URL pattern(s) {unknown} have no entry in PAGES (tests/security/test_permission_matrix.py): "
        "add one stating who may GET/POST it and how to fill its path."
    )
    gone = sorted(set(PAGES) - set(patterns))
    assert not gone, f"PAGES lists URL names that no longer exist: {gone}"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_it_gives_each_role_exactly_its_pages(name: str, world: World) -> None:
    page = PAGES[name]
    w = world
    url = url_for(name, w)
    cs = clients(w)
    got: dict[str, int] = {}
    for user, client in cs.items():
        response = client.get(url)
        got[user] = response.status_code
        if user == "anon" and not page.public:
            assert response.status_code == 302 and response["Location"].startswith(
                "/login/?next="
            ), (
                f"anonymous GET {url} must redirect to /login/, got {response.status_code} "
                f"{response.get('Location', '')}"
            )
        if user == "mallory" and name not in (
            "core:home",
            "core:tokens",
            "health",
            "favicon",
            "logout",
        ):
            assert response.status_code != 200, f"a user without a role got {url}"
    expected = {u: page.expected_get(u) for u in USERS}
    expected["anon"] = 200 if page.public else 302
    assert got == expected, f"GET {url}: expected {expected}, got {got}"


def _post(client: Client, url: str, data: dict[str, Any]) -> Any:
    return client.post(url, data)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_it_lets_no_unauthorised_post_change_anything(name: str, world: World) -> None:
    """Anonymous users, users without a role and every role not allowed to POST here: the
    database is exactly as before (the same data that the positive control shows does change
    it for an allowed user)."""
    page = PAGES[name]
    w = world
    url = url_for(name, w)
    data_for = page.post or (lambda w: {"name": "x", "action": "approve"})
    cs = clients(w)
    failures = []
    for user, client in cs.items():
        if user in page.post_allowed:
            continue
        before = db_snapshot()
        response = _post(client, url, data_for(w))
        changed = snapshot_diff(before, db_snapshot())
        if changed:
            failures.append(f"{user}: POST {url} → {response.status_code} changed {changed}")
        if user == "anon" and not page.public:
            assert response.status_code == 302 and response["Location"].startswith("/login/"), (
                f"anonymous POST {url} must redirect to login, got {response.status_code}"
            )
        elif user != "anon" and page.post is not None:
            assert response.status_code in (302, 403, 404, 405), (
                f"{user}: POST {url} → {response.status_code}"
            )
            if response.status_code == 302:
                # a redirect is fine only back into the app with an error message, never to login
                assert not response["Location"].startswith("/login/"), (
                    f"{user}: POST {url} → login?"
                )
    assert not failures, "\n".join(failures)


POSTS = sorted(n for n, p in PAGES.items() if p.post is not None)


@pytest.mark.parametrize("name", POSTS)
def test_it_lets_an_allowed_user_change_state_with_the_same_post(name: str, world: World) -> None:
    """Positive control: the POST data used above really changes the database when the user
    is allowed, so "nothing changed" for the others is a meaningful result."""
    page = PAGES[name]
    w = world
    url = url_for(name, w)
    user = next(u for u in ("alice", "rita", "sam") if u in page.post_allowed)
    client = clients(w)[user]
    before = db_snapshot()
    response = client.post(url, page.post(w))  # type: ignore[misc]
    assert response.status_code in (200, 201, 302), f"{user}: POST {url} → {response.status_code}"
    assert snapshot_diff(before, db_snapshot()), (
        f"{user}: POST {url} changed nothing (bad test data?)"
    )


# ---------------------------------------------------------------------------------- API


@dataclass(frozen=True)
class Op:
    path: Callable[[World], str]
    allowed: frozenset[str]  # roles that get ``ok``; the others get ``denied``
    ok: int = 200
    denied: int = 403
    overrides: dict[str, int] = field(default_factory=dict)
    body: Callable[[World], Any] | None = None  # JSON body, or a dict of files for multipart
    multipart: bool = False
    run_allowed: bool = True  # False: too costly/destructive to call as an allowed user here

    def expected(self, user: str) -> int:
        if user in self.overrides:
            return self.overrides[user]
        return self.ok if user in self.allowed else self.denied


ROLES_ANY = frozenset({"alice", "rita", "sam", "susan", "victor"})  # any role (not mallory)


def _upload(w: World) -> dict[str, Any]:
    return {"files": SimpleUploadedFile("api.txt", b"A document uploaded through the API.")}


def _import(w: World) -> dict[str, Any]:
    return _pairs_file(w)


API_OPS: dict[tuple[str, str], Op] = {
    ("GET", "/api/health"): Op(lambda w: "/api/health", ANY),
    ("GET", "/api/me"): Op(lambda w: "/api/me", ANY),
    ("GET", "/api/tokens"): Op(lambda w: "/api/tokens", ANY),
    ("DELETE", "/api/tokens/{token_id}"): Op(
        lambda w: f"/api/tokens/{w.sam_token.pk}",
        OWNER,
        denied=404,
        run_allowed=False,
    ),
    ("GET", "/api/model-profiles"): Op(lambda w: "/api/model-profiles", ADMIN),
    ("PUT", "/api/model-profiles/{role}"): Op(
        lambda w: "/api/model-profiles/student",
        ADMIN,
        body=lambda w: {"model": "changed"},
    ),
    ("GET", "/api/kbs"): Op(lambda w: "/api/kbs", ROLES_ANY),
    ("POST", "/api/kbs"): Op(
        lambda w: "/api/kbs", ADMIN, ok=201, body=lambda w: {"name": "From API"}
    ),
    ("GET", "/api/kbs/{slug}"): Op(lambda w: "/api/kbs/tv", ROLES_ANY),
    ("PATCH", "/api/kbs/{slug}"): Op(
        lambda w: "/api/kbs/tv", ADMIN, body=lambda w: {"name": "Renamed"}
    ),
    ("DELETE", "/api/kbs/{slug}"): Op(lambda w: "/api/kbs/junk", ADMIN, ok=204, run_allowed=False),
    ("POST", "/api/kbs/{slug}/reindex"): Op(
        lambda w: "/api/kbs/junk/reindex", ADMIN, ok=202, run_allowed=False
    ),
    ("GET", "/api/kbs/{slug}/embeddings"): Op(lambda w: "/api/kbs/tv/embeddings", ADMIN),
    ("POST", "/api/kbs/{slug}/embeddings/{version}/activate"): Op(
        lambda w: "/api/kbs/junk/embeddings/base/activate", ADMIN, run_allowed=False
    ),
    ("GET", "/api/kbs/{slug}/documents"): Op(lambda w: "/api/kbs/tv/documents", ADMIN),
    ("POST", "/api/kbs/{slug}/documents"): Op(
        lambda w: "/api/kbs/tv/documents",
        ADMIN,
        ok=201,
        body=_upload,
        multipart=True,
        run_allowed=False,
    ),
    ("GET", "/api/kbs/{slug}/documents/{document_id}"): Op(
        lambda w: f"/api/kbs/tv/documents/{w.doc.pk}", ADMIN
    ),
    ("DELETE", "/api/kbs/{slug}/documents/{document_id}"): Op(
        lambda w: f"/api/kbs/junk/documents/{w.junk_doc.pk}",
        ADMIN,
        ok=204,
        run_allowed=False,
    ),
    ("POST", "/api/kbs/{slug}/documents/{document_id}/retry"): Op(
        lambda w: f"/api/kbs/tv/documents/{w.failed_doc.pk}/retry",
        ADMIN,
        ok=202,
        run_allowed=False,
    ),
    ("POST", "/api/kbs/{slug}/search"): Op(
        lambda w: "/api/kbs/tv/search",
        ROLES_ANY,
        body=lambda w: {"query": "reset the television"},
    ),
    ("GET", "/api/kbs/{slug}/search"): Op(lambda w: "/api/kbs/tv/search?q=reset", ROLES_ANY),
    ("POST", "/api/kbs/{slug}/generation-jobs"): Op(
        lambda w: "/api/kbs/tv/generation-jobs",
        ADMIN,
        ok=201,
        body=lambda w: {"config": {"limit_chunks": 1}},
        run_allowed=False,
    ),
    ("GET", "/api/kbs/{slug}/generation-jobs"): Op(lambda w: "/api/kbs/tv/generation-jobs", ADMIN),
    ("GET", "/api/generation-jobs/{job_id}"): Op(
        lambda w: f"/api/generation-jobs/{w.job.pk}", ADMIN
    ),
    ("POST", "/api/generation-jobs/{job_id}/cancel"): Op(
        lambda w: f"/api/generation-jobs/{w.job.pk}/cancel",
        ADMIN,
        run_allowed=False,
    ),
    ("POST", "/api/generation-jobs/{job_id}/resume"): Op(
        lambda w: f"/api/generation-jobs/{w.failed_job.pk}/resume",
        ADMIN,
        run_allowed=False,
    ),
    ("GET", "/api/kbs/{slug}/qa-pairs"): Op(lambda w: "/api/kbs/tv/qa-pairs", REVIEW),
    ("GET", "/api/qa-pairs/{pair_id}"): Op(lambda w: f"/api/qa-pairs/{w.pair.pk}", REVIEW),
    ("PATCH", "/api/qa-pairs/{pair_id}"): Op(
        lambda w: f"/api/qa-pairs/{w.pair.pk}",
        REVIEW,
        body=lambda w: {"version": w.pair.version, "action": "approve"},
        run_allowed=False,
    ),
    ("POST", "/api/kbs/{slug}/qa-pairs/bulk"): Op(
        lambda w: "/api/kbs/tv/qa-pairs/bulk",
        REVIEW,
        body=lambda w: {"action": "approve"},
        run_allowed=False,
    ),
    ("GET", "/api/kbs/{slug}/qa-agreement"): Op(lambda w: "/api/kbs/tv/qa-agreement", REVIEW),
    ("POST", "/api/kbs/{slug}/qa-pairs/import"): Op(
        lambda w: "/api/kbs/tv/qa-pairs/import",
        ADMIN,
        body=_import,
        multipart=True,
        run_allowed=False,
    ),
    ("GET", "/api/kbs/{slug}/qa-pairs/export"): Op(lambda w: "/api/kbs/tv/qa-pairs/export", ADMIN),
    ("GET", "/api/kbs/{slug}/qa-prompts"): Op(lambda w: "/api/kbs/tv/qa-prompts", ADMIN),
    ("PUT", "/api/kbs/{slug}/qa-prompts"): Op(
        lambda w: "/api/kbs/tv/qa-prompts",
        ADMIN,
        body=lambda w: {"overrides": {}},
        run_allowed=False,
    ),
    # mallory gets an empty list here (no KB is open to her), not an error
    ("GET", "/api/v1/models"): Op(lambda w: "/api/v1/models", ANY),
    ("POST", "/api/v1/chat/completions"): Op(
        lambda w: "/api/v1/chat/completions",
        CHAT,
        body=lambda w: {
            "model": "tv",
            "messages": [{"role": "user", "content": "How do I reset it?"}],
        },
        run_allowed=False,  # needs a model server; covered by tests/chat/test_api_openai.py
    ),
    # --- training (admin only) ----------------------------------------------------------------
    ("POST", "/api/kbs/{slug}/training-runs"): Op(
        lambda w: "/api/kbs/tv/training-runs", ADMIN, ok=201, body=lambda w: {"kind": "generator"}
    ),
    ("GET", "/api/kbs/{slug}/training-runs"): Op(lambda w: "/api/kbs/tv/training-runs", ADMIN),
    ("GET", "/api/training-runs/{run_id}"): Op(
        lambda w: f"/api/training-runs/{TRAINING['run'].pk}", ADMIN
    ),
    ("GET", "/api/training-runs/{run_id}/metrics"): Op(
        lambda w: f"/api/training-runs/{TRAINING['run'].pk}/metrics", ADMIN
    ),
    ("POST", "/api/training-runs/{run_id}/cancel"): Op(
        lambda w: f"/api/training-runs/{TRAINING['run'].pk}/cancel", ADMIN
    ),
    ("POST", "/api/training-runs/{run_id}/resume"): Op(
        lambda w: f"/api/training-runs/{TRAINING['failed_run'].pk}/resume", ADMIN
    ),
    ("GET", "/api/kbs/{slug}/model-versions"): Op(lambda w: "/api/kbs/tv/model-versions", ADMIN),
    ("POST", "/api/model-versions/{version_id}/activate"): Op(
        lambda w: f"/api/model-versions/{TRAINING['version'].pk}/activate", ADMIN
    ),
    ("POST", "/api/model-versions/{version_id}/merge"): Op(
        lambda w: f"/api/model-versions/{TRAINING['version'].pk}/merge", ADMIN, ok=202
    ),
    # --- evaluation (admins act; reviewers read) ------------------------------------------------
    ("POST", "/api/kbs/{slug}/eval-runs"): Op(
        lambda w: "/api/kbs/tv/eval-runs",
        ADMIN,
        ok=201,
        body=lambda w: {"configs": ["emb=base,gen=base"], "question_set": "matrix-set"},
    ),
    ("GET", "/api/kbs/{slug}/eval-runs"): Op(lambda w: "/api/kbs/tv/eval-runs", REVIEW),
    ("GET", "/api/eval-runs/{run_id}"): Op(lambda w: f"/api/eval-runs/{EVAL['run'].pk}", REVIEW),
    ("GET", "/api/eval-runs/{run_id}/results"): Op(
        lambda w: f"/api/eval-runs/{EVAL['run'].pk}/results", REVIEW
    ),
    ("POST", "/api/eval-runs/{run_id}/cancel"): Op(
        lambda w: f"/api/eval-runs/{EVAL['run'].pk}/cancel", ADMIN
    ),
    ("POST", "/api/eval-runs/{run_id}/resume"): Op(
        lambda w: f"/api/eval-runs/{EVAL['failed_run'].pk}/resume", ADMIN
    ),
    ("GET", "/api/model-versions/{version_id}/gate"): Op(
        lambda w: f"/api/model-versions/{TRAINING['version'].pk}/gate", ADMIN
    ),
}

# Operations a user without a role may use (everything else: 403/404 for mallory).
MALLORY_MAY = {
    ("GET", "/api/me"),
    ("GET", "/api/tokens"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/health"),
}


def api_operations() -> set[tuple[str, str]]:
    """Every operation of the NinjaAPI: walked from its routers (so operations hidden from the
    docs with include_in_schema=False count too), plus whatever the OpenAPI schema lists."""
    from raftweb.api import api

    found: set[tuple[str, str]] = set()

    def walk(prefix: str, router: Any) -> None:
        for path, path_view in router.path_operations.items():
            full = "/api/" + "/".join(part for part in (prefix + path).split("/") if part)
            for operation in path_view.operations:
                found.update((method.upper(), full) for method in operation.methods)
        for sub_prefix, child in getattr(router, "_routers", []):
            walk(prefix + "/" + sub_prefix, child)

    for prefix, router in api._routers:
        walk(prefix, router)
    schema = api.get_openapi_schema()
    found |= {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    return found


def api_call(w: World, op: Op, method: str, token: str | None) -> Any:
    client = Client()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = op.path(w)
    body = op.body(w) if op.body else None
    if op.multipart:
        assert method == "POST", "multipart bodies are only sent with POST"
        return client.post(path, body or {}, headers=headers)
    if body is None:
        return client.generic(method, path, headers=headers)
    return client.generic(
        method, path, json.dumps(body), content_type="application/json", headers=headers
    )


def test_it_knows_every_api_operation() -> None:
    ops = api_operations()
    unknown = sorted(ops - set(API_OPS))
    assert not unknown, (
        f"New API operation(s) {unknown} have no entry in API_OPS (tests/security/test_permission_matrix.py): "
        "add one stating which roles may call it."
    )
    gone = sorted(set(API_OPS) - ops)
    assert not gone, f"API_OPS lists operations that no longer exist: {gone}"


def _error_shape(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "details"} <= set(body["error"]), body
    return body["error"]


@pytest.mark.parametrize("key", sorted(API_OPS), ids=lambda k: f"{k[0]} {k[1]}")
def test_it_guards_each_api_operation_for_each_role(key: tuple[str, str], world: World) -> None:
    method, _ = key
    op = API_OPS[key]
    w = world
    # 1. no credentials: 401 in the API's error shape (health is the one public operation)
    before = db_snapshot()
    response = api_call(w, op, method, None)
    if key == ("GET", "/api/health"):
        assert response.status_code in (200, 503)
    else:
        assert response.status_code == 401, f"{key} without auth → {response.status_code}"
        assert _error_shape(response)["code"] == "unauthorized"
    # 2. a bad token is no better than none
    if key != ("GET", "/api/health"):
        assert api_call(w, op, method, "not-a-token").status_code == 401
    assert not snapshot_diff(before, db_snapshot()), f"{key}: an unauthenticated call changed data"
    # 3. each role with its own token
    got: dict[str, int] = {}
    expected: dict[str, int] = {}
    for user in USERS:
        allowed = user in op.allowed
        if allowed and not op.run_allowed:
            continue
        before = db_snapshot()
        response = api_call(w, op, method, w.raw_tokens[user])
        if key == ("GET", "/api/health"):
            assert response.status_code in (200, 503)
            continue
        got[user] = response.status_code
        expected[user] = op.expected(user)
        if response.status_code >= 400:
            _error_shape(response)
        if not allowed:
            assert not snapshot_diff(before, db_snapshot()), (
                f"{user}: {key} → {response.status_code} changed data"
            )
        if user == "mallory" and key not in MALLORY_MAY:
            assert response.status_code in (403, 404), f"mallory: {key} → {response.status_code}"
    assert got == expected, f"{key}: expected {expected}, got {got}"


# ------------------------------------------------------------------ restricted knowledge base
# The vault KB is restricted to the "vip" group: victor (support + vip) and alice (admin) may
# use it; rita, sam and susan get the same 404 as for a KB that does not exist.


def _get(w: World, user: str, url: str) -> Any:
    return clients(w)[user].get(url)


@pytest.mark.parametrize(
    "user, visible",
    [("rita", False), ("sam", False), ("susan", False), ("victor", True), ("alice", True)],
)
def test_it_hides_a_restricted_kb_from_other_groups_on_every_channel(
    user: str, visible: bool, world: World
) -> None:
    w = world
    c = clients(w)[user]
    token = {"Authorization": f"Bearer {w.raw_tokens[user]}"}
    api = Client()
    # API: listing, detail, search
    slugs = [kb["slug"] for kb in api.get("/api/kbs", headers=token).json()]
    assert ("vault" in slugs) is visible and "tv" in slugs
    assert api.get("/api/kbs/vault", headers=token).status_code == (200 if visible else 404)
    assert api.get("/api/kbs/vault/search?q=combination", headers=token).status_code == (
        200 if visible else 404
    )
    search = api.post(
        "/api/kbs/vault/search",
        {"query": "combination"},
        content_type="application/json",
        headers=token,
    )
    assert search.status_code == (200 if visible else 404)
    if not visible:
        assert _error_shape(search)["code"] == "not_found"
    # OpenAI-compatible endpoint: the vault is not a model this user can see or call
    models = [m["id"] for m in api.get("/api/v1/models", headers=token).json()["data"]]
    can_chat = user in CHAT
    assert ("vault" in models) is (visible and can_chat)
    if can_chat and not visible:
        response = api.post(
            "/api/v1/chat/completions",
            {
                "model": "vault",
                "messages": [{"role": "user", "content": "What is the combination?"}],
            },
            content_type="application/json",
            headers=token,
        )
        assert response.status_code == 404 and _error_shape(response)["code"] == "model_not_found"
        assert "combination is kept" not in response.content.decode()
    # chat pages: KB page, starting a conversation, a source chunk
    if can_chat:
        assert c.get(reverse("chat:kb", args=["vault"])).status_code == (200 if visible else 404)
        assert c.get(reverse("chat:source", args=[w.vault_chunk.pk])).status_code == (
            200 if visible else 404
        )
        assert ("Vault" in c.get(reverse("chat:home")).content.decode()) is visible
        before = db_snapshot()
        response = c.post(reverse("chat:new", args=["vault"]))
        assert response.status_code == (302 if visible else 404)
        assert bool(snapshot_diff(before, db_snapshot())) is visible


@pytest.mark.parametrize("user, visible", [("rita", False), ("alice", True)])
def test_it_keeps_a_restricted_kb_out_of_the_review_workspace(
    user: str, visible: bool, world: World
) -> None:
    w = world
    c = clients(w)[user]
    status = 200 if visible else 404
    for url in (
        f"{reverse('review:queue')}?kb=vault",
        f"{reverse('review:agreement')}?kb=vault",
        f"{reverse('review:history')}?kb=vault",
        reverse("review:pair", args=[w.vault_pair.pk]),
        reverse("review:pair_history", args=[w.vault_pair.pk]),
    ):
        assert c.get(url).status_code == status, url
    assert (
        "Who keeps the combination" in c.get(reverse("review:queue") + "?kb=tv").content.decode()
    ) is False
    token = {"Authorization": f"Bearer {w.raw_tokens[user]}"}
    api = Client()
    for url in (
        "/api/kbs/vault/qa-pairs",
        f"/api/qa-pairs/{w.vault_pair.pk}",
        "/api/kbs/vault/qa-agreement",
    ):
        assert api.get(url, headers=token).status_code == status, url
    if not visible:
        before = db_snapshot()
        assert (
            c.post(
                reverse("review:pair", args=[w.vault_pair.pk]),
                {"action": "approve", "version": w.vault_pair.version},
            ).status_code
            == 404
        )
        c.post(reverse("review:bulk"), {"kb": "vault", "action": "approve"})
        patch = api.patch(
            f"/api/qa-pairs/{w.vault_pair.pk}",
            {"version": w.vault_pair.version, "action": "approve"},
            content_type="application/json",
            headers=token,
        )
        assert patch.status_code == 404
        bulk = api.post(
            "/api/kbs/vault/qa-pairs/bulk",
            {"action": "approve"},
            content_type="application/json",
            headers=token,
        )
        assert bulk.status_code == 404
        assert not snapshot_diff(before, db_snapshot()), (
            "a reviewer changed pairs of a KB hidden from them"
        )


# ------------------------------------------------------------------ accounts, tokens, CSRF


def test_it_shows_and_revokes_only_your_own_tokens(world: World) -> None:
    w = world
    api = Client()
    mine = api.get(
        "/api/tokens", headers={"Authorization": f"Bearer {w.raw_tokens['mallory']}"}
    ).json()
    assert [t["name"] for t in mine] == ["matrix"], "mallory must see her own token only"
    assert all(
        set(t) == {"id", "name", "hint", "read_only", "created_at", "last_used_at", "revoked_at"}
        for t in mine
    )
    page = clients(w)["mallory"].get(reverse("core:tokens")).content.decode()
    assert "sam&#x27;s script" not in page and "sam's script" not in page
    before = db_snapshot()
    assert (
        clients(w)["mallory"].post(reverse("core:token_revoke", args=[w.sam_token.pk])).status_code
        == 302
    )
    assert not snapshot_diff(before, db_snapshot())


def test_it_refuses_revoked_tokens_and_inactive_users(world: World) -> None:
    from django.utils import timezone

    from raftweb.core.models import ApiToken

    w = world
    api = Client()
    sam = {"Authorization": f"Bearer {w.raw_tokens['sam']}"}
    assert api.get("/api/me", headers=sam).status_code == 200
    ApiToken.objects.filter(user=w.users["sam"]).update(revoked_at=timezone.now())
    assert api.get("/api/me", headers=sam).status_code == 401
    rita_client = clients(w)["rita"]  # logged in before the account is disabled
    w.users["rita"].is_active = False
    w.users["rita"].save()
    response = api.get("/api/me", headers={"Authorization": f"Bearer {w.raw_tokens['rita']}"})
    assert response.status_code == 401 and _error_shape(response)["code"] == "unauthorized"
    assert rita_client.get(reverse("review:queue"))["Location"].startswith("/login/")


def test_it_applies_a_role_change_to_an_open_session_at_once(world: World) -> None:
    from django.contrib.auth.models import Group

    w = world
    sam = clients(w)["sam"]
    assert sam.get(reverse("chat:conversation", args=[w.conversation.pk])).status_code == 200
    w.users["sam"].groups.remove(Group.objects.get(name="support"))
    assert sam.get(reverse("chat:conversation", args=[w.conversation.pk])).status_code == 403
    token = {"Authorization": f"Bearer {w.raw_tokens['sam']}"}
    assert Client().get("/api/kbs", headers=token).status_code == 403


def test_it_enforces_csrf_on_session_requests(world: World) -> None:
    """Logged-in browser sessions need the CSRF token on every state change — pages, the
    upload view (which installs its handler before the CSRF check) and the API under session
    auth; API calls with a bearer token need none (no ambient credential)."""
    w = world
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(w.users["alice"])
    before = db_snapshot()
    assert (
        browser.post(
            reverse("corpus:kb_create"), {"name": "Forged", "chunk_size": 300, "chunk_overlap": 30}
        ).status_code
        == 403
    )
    upload = browser.post(
        reverse("corpus:kb_upload", args=["tv"]),
        {"files": SimpleUploadedFile("forged.txt", b"forged upload")},
    )
    assert upload.status_code == 403
    response = browser.post("/api/kbs", {"name": "Forged"}, content_type="application/json")
    assert response.status_code == 403 and "error" in response.json()
    response = browser.delete("/api/kbs/tv")
    assert response.status_code == 403
    response = browser.post(
        "/api/v1/chat/completions",
        {"model": "tv", "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert browser.post(reverse("chat:delete", args=[w.conversation.pk])).status_code == 403
    assert not snapshot_diff(before, db_snapshot()), "a request without the CSRF token changed data"
    # positive controls: the same requests with the token / with a bearer token go through
    browser.get(reverse("corpus:kb_create"))
    csrf = browser.cookies["csrftoken"].value
    assert (
        browser.post(
            reverse("corpus:kb_create"),
            {"name": "Real", "chunk_size": 300, "chunk_overlap": 30, "csrfmiddlewaretoken": csrf},
        ).status_code
        == 302
    )
    response = Client(enforce_csrf_checks=True).post(
        "/api/kbs",
        {"name": "Scripted"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {w.raw_tokens['alice']}"},
    )
    assert response.status_code == 201


def test_it_keeps_api_keys_of_model_profiles_secret(world: World) -> None:
    from raftweb.core.services import profile_update, profiles_ensure

    w = world
    profiles_ensure()
    profile_update(
        role="teacher",
        user=None,
        backend="openai",
        model="m",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-very-secret-key-123",
    )
    alice = clients(w)["alice"]
    for url in (reverse("core:profiles"), reverse("core:profile_edit", args=["teacher"])):
        assert "sk-very-secret-key-123" not in alice.get(url).content.decode(), url
    body = Client().get(
        "/api/model-profiles", headers={"Authorization": f"Bearer {w.raw_tokens['alice']}"}
    )
    assert "sk-very-secret-key-123" not in body.content.decode()
    assert any(p["has_api_key"] for p in body.json())


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example"])
def test_it_never_redirects_off_site_after_login(target: str, world: World) -> None:
    response = Client().post(
        reverse("login"), {"username": "alice", "password": "pw-alice", "next": target}
    )
    assert response.status_code == 302
    assert response["Location"].startswith("/") and not response["Location"].startswith(
        ("//", "/\\")
    )
    assert "evil.example" not in response["Location"]


def test_it_sends_protective_headers_and_cookie_flags(world: World) -> None:
    client = Client()
    response = client.post(reverse("login"), {"username": "sam", "password": "pw-sam"})
    assert response.cookies["sessionid"]["httponly"]
    page = client.get(reverse("chat:home"))
    assert page["X-Frame-Options"] == "DENY"
    assert page["X-Content-Type-Options"] == "nosniff"
