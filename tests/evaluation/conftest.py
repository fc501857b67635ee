"""Evaluation tests: a real ingested knowledge base (parsed, chunked, indexed in embedded Chroma
and BM25), the student answering from a real OpenAI-compatible server on loopback
(:mod:`raftweb.testing.scripted_llm`), and the judge a scripted in-process backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from raftweb.testing.scripted_llm import ScriptedLLM

DOCS = {
    "reset#1.txt": "To reset the television, hold the power button for ten seconds. The factory "
    "settings are restored and the channels are erased.",
    "warranty.txt": "The warranty covers two years of normal use. Water damage and cracked "
    "screens are not covered by the warranty.",
    "remote.txt": "The remote pairs with the television when you hold the home key and the back "
    "key together. A blinking light means the batteries are low.",
}


@pytest.fixture
def student_llm(db: Any, scripted_llm: ScriptedLLM) -> ScriptedLLM:
    from raftweb.core.services import profile_update

    profile_update(
        role="student", user=None, backend="openai", model=scripted_llm.model,
        base_url=scripted_llm.base_url, max_concurrency=8, timeout_s=10.0,
    )  # fmt: skip
    return scripted_llm


@pytest.fixture
def judge_scripted(db: Any) -> Any:
    """The judge profile on a scripted backend (replies a JSON score 4 unless scripted)."""
    import uuid

    from raftweb.core.services import profile_spec, profile_update
    from raftweb.llm import get_backend
    from tests.fixtures.raft import ScriptedBackend

    profile_update(role="judge", user=None, backend="scripted", model=f"j-{uuid.uuid4().hex[:8]}")
    backend = get_backend(profile_spec("judge"))
    assert isinstance(backend, ScriptedBackend)
    return backend


@pytest.fixture
def judge_down(db: Any) -> None:
    """The judge profile on a closed loopback port: every call fails to connect."""
    from raftweb.core.services import profile_update
    from tests.services import free_port

    profile_update(
        role="judge", user=None, backend="openai", model="judge",
        base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2.0,
    )  # fmt: skip


@pytest.fixture
def eval_kb(db: Any) -> Any:
    """KB "tv": three ingested documents (one sanitised name: reset#1.txt) and approved
    eval-split pairs: one per document plus one refusal row."""
    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload, kb_create
    from corpus.models import Chunk, QAPair

    kb = kb_create(name="TV", slug="tv")
    for name, text in DOCS.items():
        result = document_upload(kb=kb, name=name, chunks=[text.encode()], enqueue=False)
        document_ingest(document_id=result.document.pk)
    for chunk in Chunk.objects.filter(document__kb=kb).select_related("document"):
        QAPair.objects.create(
            kb=kb,
            document=chunk.document,
            oracle_chunk=chunk,
            question=f"What does the manual say in {chunk.document.original_filename}?",
            cot_answer=f"<ANSWER>: {chunk.text.split('.')[0]}.",
            final_answer=chunk.text.split(".")[0] + ".",
            status=QAPair.Status.APPROVED,
            split="eval",
        )
    QAPair.objects.create(
        kb=kb,
        question="What colour is the box? REFUSE",
        final_answer="The context does not contain the answer.",
        refusal=True,
        status=QAPair.Status.APPROVED,
        split="eval",
    )
    return kb


@pytest.fixture
def run_evaluate() -> Callable[..., tuple[dict[str, Any], str, str]]:
    import json
    from io import StringIO

    from django.core.management import call_command

    def run(*args: str) -> tuple[dict[str, Any], str, str]:
        out, err = StringIO(), StringIO()
        call_command("evaluate", *args, stdout=out, stderr=err)
        return json.loads(out.getvalue().strip().splitlines()[-1]), out.getvalue(), err.getvalue()

    return run
