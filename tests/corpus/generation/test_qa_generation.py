from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from corpus.dataset.services import QAError
from corpus.generation import runner
from corpus.generation.runner import generation_job_claim, generation_job_run
from corpus.generation.selectors import STALE_AFTER
from corpus.generation.services import (
    generation_job_cancel,
    generation_job_create,
    generation_job_resume,
)
from corpus.models import DocumentSplit, GenerationJob, GenerationUnit, ModelCall, QAPair
from raftweb.llm.base import BackendUnavailable

FAST = {"questions_per_chunk": 2, "hard_negative_share": 0.0, "num_distractors": 2, "seed": 3}


@pytest.fixture(autouse=True)
def _no_hook():  # type: ignore[no-untyped-def]
    yield
    runner.after_unit_saved = None


def _rows(job: GenerationJob) -> list[tuple[int, int, tuple[int, ...], int | None]]:
    return sorted(
        (p.oracle_chunk_id, p.question_index, tuple(p.context_chunk_ids), p.oracle_index)
        for p in QAPair.objects.filter(job=job)
    )


def test_it_runs_a_job_and_records_rows_tokens_cost_and_splits(
    manual_kb, scripted_profiles
) -> None:  # type: ignore[no-untyped-def]
    teacher, judge = scripted_profiles(price_in=1.0, price_out=2.0)
    job = generation_job_create(kb=manual_kb, config={**FAST, "p": 1.0}, enqueue=False)
    assert job.chunks_total == 6 and job.units.count() == 6
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished" and job.chunks_done == 6 and job.rows == 12
    pairs = list(QAPair.objects.filter(job=job))
    assert len(pairs) == 12
    assert all(
        p.status == "pending" and p.quote_status == "verified" and p.judge_score == 4 for p in pairs
    )
    assert all(p.context_texts[p.oracle_index] == p.oracle_text for p in pairs)
    assert job.calls == ModelCall.objects.filter(job=job).count() == 6 + 12 + 12
    assert job.tokens_in == sum(c.prompt_tokens for c in ModelCall.objects.filter(job=job))
    assert job.cost == pytest.approx(job.tokens_in / 1000 * 1.0 + job.tokens_out / 1000 * 2.0)
    # split by document: one of three documents is held out, and all its rows are eval
    splits = dict(DocumentSplit.objects.filter(kb=manual_kb).values_list("document_id", "split"))
    assert list(splits.values()).count("eval") == 1
    assert all(p.split == splits[p.document_id] for p in pairs)


def test_it_resumes_a_killed_job_with_no_duplicate_and_no_lost_row(
    manual_kb, scripted_profiles
) -> None:  # type: ignore[no-untyped-def]
    scripted_profiles()
    reference = generation_job_run(
        job_id=generation_job_create(kb=manual_kb, config=FAST, enqueue=False).pk
    )
    job = generation_job_create(kb=manual_kb, config=FAST, enqueue=False)
    saved = []

    def kill(job_, unit):  # type: ignore[no-untyped-def]
        saved.append(unit.pk)
        if len(saved) == 2:
            raise KeyboardInterrupt("worker killed")

    runner.after_unit_saved = kill
    with pytest.raises(KeyboardInterrupt):
        generation_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "running"
    assert job.units.filter(state="done").count() == 2
    assert QAPair.objects.filter(job=job).count() == 4
    runner.after_unit_saved = None
    # While its heartbeat is fresh the job still belongs to the (maybe alive) first worker.
    assert generation_job_run(job_id=job.pk).units.filter(state="done").count() == 2
    # A killed worker stops reporting; once its heartbeat is stale another run takes over.
    GenerationJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - STALE_AFTER - timedelta(seconds=1)
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished" and job.chunks_done == 6 and job.rows == 12
    assert len(_rows(job)) == len(set(_rows(job))) == 12
    assert _rows(job) == _rows(reference)  # the same rows as an uninterrupted run
    assert generation_job_run(job_id=job.pk).rows == 12  # running a finished job is a no-op


def test_it_cancels_a_running_job(manual_kb, scripted_profiles) -> None:  # type: ignore[no-untyped-def]
    scripted_profiles()
    job = generation_job_create(kb=manual_kb, config={**FAST, "max_concurrency": 1}, enqueue=False)
    GenerationJob.objects.filter(pk=job.pk).update(status="running")
    runner.after_unit_saved = lambda j, u: generation_job_cancel(
        job=GenerationJob.objects.get(pk=j.pk)
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "cancelled"
    assert job.units.filter(state="pending").exists()
    with pytest.raises(QAError):
        generation_job_cancel(job=job)


def test_it_fails_clearly_when_the_teacher_is_down_and_resumes_later(
    manual_kb, scripted_profiles
) -> None:  # type: ignore[no-untyped-def]
    teacher, _ = scripted_profiles()

    def down(messages):  # type: ignore[no-untyped-def]
        raise BackendUnavailable("The model server at http://127.0.0.1:9 could not be reached.")

    teacher.script["questions"] = down
    job = generation_job_run(
        job_id=generation_job_create(kb=manual_kb, config=FAST, enqueue=False).pk
    )
    assert job.status == "failed" and "could not be reached" in job.error
    assert job.units.filter(state="failed").count() == 6 and job.chunks_failed == 6
    teacher.script.clear()
    generation_job_resume(job=job, enqueue=False)
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished" and job.chunks_done == 6 and job.chunks_failed == 0
    assert QAPair.objects.filter(job=job).count() == 12


def test_it_rejects_bad_configs_and_empty_kbs(manual_kb, scripted_profiles) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QAError, match="p must be between"):
        generation_job_create(kb=manual_kb, config={"p": 1.5}, enqueue=False)
    with pytest.raises(QAError, match="unknown generation setting"):
        generation_job_create(kb=manual_kb, config={"nope": 1}, enqueue=False)
    with pytest.raises(QAError, match="no ready chunks"):
        generation_job_create(kb=manual_kb, config={"document_ids": [999999]}, enqueue=False)
    job = generation_job_create(kb=manual_kb, config={"limit_chunks": 2}, enqueue=False)
    assert job.chunks_total == 2 and GenerationUnit.objects.filter(job=job).count() == 2


def test_it_takes_hard_negatives_from_the_corpus_retrieval_service(
    manual_kb, scripted_profiles
) -> None:  # type: ignore[no-untyped-def]
    from corpus.knowledge.indexes import bm25_index
    from corpus.knowledge.search import kb_search
    from corpus.models import Chunk, EmbeddingIndex
    from raftweb.retrieval import IndexedChunk

    EmbeddingIndex.objects.create(kb=manual_kb, version="base", model="all-MiniLM-L6-v2")
    chunks = list(Chunk.objects.filter(document__kb=manual_kb).select_related("document"))
    bm25_index(manual_kb).add(
        [
            IndexedChunk(
                chunk_id=str(c.pk),
                document_id=c.document_id,
                text=c.text,
                document_name=c.document.name,
            )
            for c in chunks
        ]
    )
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
        },
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished" and job.rows == 6
    for pair in QAPair.objects.filter(job=job).select_related("oracle_chunk"):
        hits = [
            int(h.chunk_id)
            for h in kb_search(kb=manual_kb, query=pair.oracle_chunk.text, mode="bm25", k=5)
        ]
        expected = next(h for h in hits if h != pair.oracle_chunk_id)
        [distractor] = [c for c in pair.context_chunk_ids if c != pair.oracle_chunk_id]
        assert distractor == expected


def test_it_resumes_a_job_whose_worker_died(
    manual_kb, scripted_profiles, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from django.utils import timezone

    from corpus.generation.selectors import job_is_stale
    from corpus.tasks import generation_jobs_resume_stale

    scripted_profiles()
    job = generation_job_create(kb=manual_kb, config=FAST, enqueue=False)
    GenerationJob.objects.filter(pk=job.pk).update(
        status="running", heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    job.refresh_from_db()
    assert job_is_stale(job)
    with pytest.raises(QAError, match="still running"):
        GenerationJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
        generation_job_resume(job=GenerationJob.objects.get(pk=job.pk), enqueue=False)
    GenerationJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    with django_capture_on_commit_callbacks(execute=True):
        generation_jobs_resume_stale.call_local()
    job.refresh_from_db()
    assert job.status == "finished" and job.rows == 12


def test_it_notes_a_chunk_truncated_for_the_teacher(manual_kb, scripted_profiles) -> None:  # type: ignore[no-untyped-def]
    from corpus.models import Chunk

    scripted_profiles()
    Chunk.objects.filter(document__kb=manual_kb, ordinal=0).update(
        text="Long text. " + "word " * 6000
    )
    job = generation_job_create(
        kb=manual_kb,
        enqueue=False,
        config={**FAST, "teacher_context_tokens": 2048, "max_new_tokens": 800},
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished"
    assert sum("truncated" in n for n in job.notes) == 3
    assert sum(any("truncated" in n for n in u.notes) for u in job.units.all()) == 3


def test_it_gives_training_only_train_rows(manual_kb, scripted_profiles) -> None:  # type: ignore[no-untyped-def]
    from corpus.dataset.io import qa_rows

    scripted_profiles()
    generation_job_run(job_id=generation_job_create(kb=manual_kb, config=FAST, enqueue=False).pk)
    QAPair.objects.filter(kb=manual_kb).update(status="approved")
    train = list(qa_rows(kb=manual_kb))
    evals = list(qa_rows(kb=manual_kb, split="eval"))
    assert train and evals and len(train) + len(evals) == 12
    assert all(r.split == "train" for r in train) and all(r.split == "eval" for r in evals)
    assert all(r.instruction.endswith(r.question) for r in train)


def test_it_lets_exactly_one_claim_through(manual_kb) -> None:  # type: ignore[no-untyped-def]
    job = generation_job_create(kb=manual_kb, config=FAST, enqueue=False)
    assert generation_job_claim(job_id=job.pk) is True
    assert generation_job_claim(job_id=job.pk) is False  # running, heartbeat fresh
    GenerationJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - STALE_AFTER - timedelta(seconds=1)
    )
    assert generation_job_claim(job_id=job.pk) is True  # its worker went silent
    assert generation_job_claim(job_id=job.pk) is False


@pytest.mark.django_db(transaction=True)
def test_it_runs_a_job_once_when_two_workers_race_for_it(manual_kb, scripted_profiles) -> None:  # type: ignore[no-untyped-def]
    """The original worker and a stale-job resume (or a job enqueued twice) start together:
    one runs the job, the other backs off, and the teacher is paid once per call."""
    import threading

    from django.db import connection

    teacher, _ = scripted_profiles()
    reference = generation_job_run(
        job_id=generation_job_create(kb=manual_kb, config=FAST, enqueue=False).pk
    )
    calls_for_one_run = len(teacher.calls)
    teacher.calls.clear()
    teacher.delay_s = 0.01  # both workers are inside the job at the same time
    job = generation_job_create(kb=manual_kb, config=FAST, enqueue=False)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(generation_job_run(job_id=job.pk).status)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    job.refresh_from_db()
    assert job.status == "finished" and job.rows == reference.rows
    assert "finished" in results and len(results) == 2  # the loser returns at once, as it found it
    assert len(teacher.calls) == calls_for_one_run
    assert (
        ModelCall.objects.filter(job=job).count() == ModelCall.objects.filter(job=reference).count()
    )
