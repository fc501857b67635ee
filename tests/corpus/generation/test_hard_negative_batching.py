"""Generation looks up the hard negatives of the chunks it submits together, in one batched
search, with each chunk's own stored vector as its dense query (issue 11)."""

from __future__ import annotations

from typing import Any

import pytest

from corpus.generation import runner
from corpus.generation.runner import generation_job_run
from corpus.generation.services import generation_job_create
from corpus.knowledge.indexes import bm25_index
from corpus.models import Chunk, QAPair
from raftweb.retrieval import IndexedChunk

pytestmark = pytest.mark.django_db


def test_it_searches_the_hard_negatives_of_a_window_in_one_batch(
    manual_kb: Any, scripted_profiles: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = list(Chunk.objects.filter(document__kb=manual_kb).select_related("document"))
    bm25_index(manual_kb).add(
        [
            IndexedChunk(
                chunk_id=str(c.pk),
                document_id=c.document_id,
                text=c.text,
                document_name=c.document.name,
            )  # fmt: skip
            for c in chunks
        ]
    )
    calls: list[dict[str, Any]] = []
    real = runner.kb_search_many

    def recording(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(runner, "kb_search_many", recording)
    scripted_profiles()
    job = generation_job_create(
        kb=manual_kb,
        enqueue=False,
        config={
            "questions_per_chunk": 1,
            "num_distractors": 1,
            "hard_negative_share": 1.0,
            "p": 1.0,
            "hard_negative_mode": "bm25",
            "max_concurrency": 8,
        },
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished" and job.rows == len(chunks) == 6
    # One search call for the six chunks of the first window, not six.
    assert len(calls) == 1
    assert sorted(calls[0]["like_chunk_ids"]) == sorted(c.pk for c in chunks)
    assert len(calls[0]["queries"]) == 6
    for pair in QAPair.objects.filter(job=job):
        [distractor] = [c for c in pair.context_chunk_ids if c != pair.oracle_chunk_id]
        assert distractor != pair.oracle_chunk_id  # a retrieved neighbour, never the oracle
