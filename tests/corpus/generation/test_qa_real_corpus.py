"""Generation over a KB ingested the real way (parse, chunk, embed, Chroma + BM25), with hybrid
hard negatives from the corpus retrieval service. Uses the public E-Manual sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus.generation.runner import generation_job_run
from corpus.generation.services import generation_job_create
from corpus.knowledge.ingestion import document_ingest
from corpus.knowledge.search import kb_search
from corpus.knowledge.services import document_upload, kb_create
from corpus.models import QAPair

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CORPUS = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "datasets"
    / "emanual_s10"
    / "corpus_s10.jsonl"
)


@pytest.mark.skipif(
    not CORPUS.exists(), reason="the public E-Manual dataset is not at ../shared/datasets"
)
def test_it_generates_from_an_ingested_kb_with_hybrid_hard_negatives(db, scripted_profiles) -> None:  # type: ignore[no-untyped-def]
    kb = kb_create(name="S10 manual")
    sections = [
        json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()[100:112]
    ]
    for section in sections:
        doc = document_upload(
            kb=kb, name=f"{section['doc_id']}.txt", chunks=[section["text"].encode()], enqueue=False
        ).document
        document_ingest(document_id=doc.pk)
    scripted_profiles()
    job = generation_job_create(
        kb=kb,
        enqueue=False,
        config={
            "limit_chunks": 4,
            "questions_per_chunk": 1,
            "num_distractors": 3,
            "hard_negative_share": 1.0,
            "p": 1.0,
            "hard_negative_mode": "hybrid",
        },
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished", job.error
    assert not [n for n in job.notes if "unavailable" in n], job.notes
    pairs = list(QAPair.objects.filter(job=job))
    assert len(pairs) == 4
    for pair in pairs:
        assert len(pair.context_chunk_ids) == 4 and pair.quote_status == "verified"
        assert pair.context_texts[pair.oracle_index] == pair.oracle_text
        # every distractor is a retrieved neighbour of the oracle (a hard negative), not random
        hits = {
            int(h.chunk_id)
            for h in kb_search(kb=kb, query=pair.oracle_text[:2000], mode="hybrid", k=9)
        }
        distractors = set(pair.context_chunk_ids) - {pair.oracle_chunk_id}
        assert distractors <= hits
