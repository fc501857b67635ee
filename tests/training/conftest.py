"""Training tests: runs are trained by the contract-following fake script
(``tests/training/fake_train.py``) as a real subprocess, in a run directory under tmp_path."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FAKE_MODULE = "tests.training.fake_train"

DOCS = {
    "reset.txt": "To reset the television, hold the power button for ten seconds. The factory "
    "settings are restored and the channels are erased.",
    "warranty.txt": "The warranty covers two years of normal use. Water damage and cracked "
    "screens are not covered by the warranty.",
    "remote.txt": "The remote pairs with the television when you hold the home key and the back "
    "key together. A blinking light means the batteries are low.",
}


def permissive_resolve_config(
    kind: str, preset: str | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Stands in for raftweb.train.config.resolve_config: these tests are about the worker
    and the pages, not about which keys the engine's configs have."""
    return {**({"preset": preset} if preset else {}), **overrides}


@pytest.fixture
def engine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from training import services

    monkeypatch.setattr(services, "_engine_resolve_config", permissive_resolve_config)


@pytest.fixture(autouse=True)
def train_settings(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    settings.TRAIN_RUNS_DIR = tmp_path / "runs"
    settings.TRAIN_MODULE = FAKE_MODULE
    settings.TRAIN_LAUNCHER = "python"
    settings.TRAIN_POLL_S = 0.05
    for name in (
        "FAKE_TRAIN_STEPS",
        "FAKE_TRAIN_STEP_S",
        "FAKE_TRAIN_FAIL_AT",
        "FAKE_TRAIN_NO_DONE",
        "FAKE_TRAIN_REPORT_FAILURE",
        "FAKE_TRAIN_EMBEDDING_FROM",
    ):
        monkeypatch.delenv(name, raising=False)
    return settings


def _pair(kb: Any, chunk: Any, distractors: list[Any], **fields: Any) -> Any:
    from corpus.models import QAPair

    texts = [chunk.text, *(d.text for d in distractors)]
    values: dict[str, Any] = {
        "kb": kb,
        "document": chunk.document,
        "oracle_chunk": chunk,
        "question": f"What does {chunk.document.name} say?",
        "cot_answer": f"##begin_quote##{chunk.text[:30]}##end_quote## <ANSWER>: this",
        "final_answer": "this",
        "context_chunk_ids": [chunk.pk, *(d.pk for d in distractors)],
        "context_texts": texts,
        "context_titles": ["" for _ in texts],
        "oracle_index": 0,
        "oracle_text": chunk.text,
        "status": QAPair.Status.APPROVED,
        "split": "train",
    }
    values.update(fields)
    return QAPair.objects.create(**values)


@pytest.fixture
def make_pair() -> Callable[..., Any]:
    return _pair


@pytest.fixture
def tv_kb(db: object) -> Any:
    """A KB with three documents (one chunk each) written straight to the database, and
    approved pairs: 10 train (one from chat feedback), 2 eval, plus a pending and a rejected
    one that must never be trained on."""
    from corpus.models import Chunk, Document, KnowledgeBase, QAPair

    kb = KnowledgeBase.objects.create(slug="tv", name="TV")
    chunks = []
    for name, text in DOCS.items():
        doc = Document.objects.create(
            kb=kb,
            name=name,
            original_filename=name,
            file_path=name,
            content_hash=hashlib.sha256(name.encode()).hexdigest(),
            status=Document.Status.READY,
            chunk_count=1,
        )
        chunks.append(
            Chunk.objects.create(
                document=doc,
                ordinal=0,
                text=text,
                start=0,
                end=len(text),
                hash=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    for i in range(10):
        oracle = chunks[i % 3]
        others = [c for c in chunks if c != oracle]
        _pair(
            kb,
            oracle,
            others,
            question=f"Question {i} about {oracle.document.name}?",
            source=QAPair.Source.CHAT_FEEDBACK if i == 0 else QAPair.Source.GENERATED,
        )
    for i in range(2):
        _pair(kb, chunks[i], [chunks[2]], question=f"Eval question {i}?", split="eval")
    _pair(kb, chunks[0], [], question="Pending?", status=QAPair.Status.PENDING)
    _pair(kb, chunks[1], [], question="Rejected?", status=QAPair.Status.REJECTED)
    return kb
