"""Fault: the database connection drops in the middle of saving a generation unit (after the
unit's rows were inserted, before its model calls and state). The worker's run dies with the
error; the unit's half-written transaction is rolled back; the stale-job sweep finds the job
and a new run finishes it — with exactly the rows and model calls of a run that never failed.

On PostgreSQL the drop is real: the backend serving the worker's connection is terminated
(``pg_terminate_backend``) from a second connection. On SQLite, which has no server to lose,
the query fails with the error a dropped connection gives (``OperationalError``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, close_old_connections, connection, connections
from django.db.utils import InterfaceError
from django.utils import timezone

from corpus.generation import runner
from corpus.generation.runner import generation_job_run
from corpus.generation.selectors import STALE_AFTER, generation_jobs_stale
from corpus.generation.services import generation_job_create
from corpus.models import GenerationJob, GenerationUnit, ModelCall, QAPair

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"questions_per_chunk": 2, "hard_negative_share": 0.0, "num_distractors": 2, "seed": 3}


@pytest.fixture(autouse=True)
def _no_hook() -> Any:
    yield
    runner.after_unit_saved = None


def _drop_connection() -> None:
    if connection.vendor == "postgresql":
        pid = connection.connection.info.backend_pid
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            other.close()
        return
    raise OperationalError("server closed the connection unexpectedly (simulated on SQLite)")


def _drop_before(table: str, armed: Callable[[], bool]) -> Callable[..., Any]:
    """A query wrapper that drops the connection just before the first INSERT into ``table``
    once ``armed()`` says so."""
    fired: list[str] = []

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if not fired and armed() and sql.lstrip().upper().startswith("INSERT") and table in sql:
            fired.append(sql)
            _drop_connection()
        return execute(sql, params, many, context)

    wrapper.fired = fired  # type: ignore[attr-defined]
    return wrapper


def _counts(job: GenerationJob) -> tuple[int, int, int, int]:
    pairs = QAPair.objects.filter(job=job)
    distinct = pairs.values("oracle_chunk_id", "question_index").distinct().count()
    done = job.units.filter(state=GenerationUnit.State.DONE).count()
    return pairs.count(), distinct, done, ModelCall.objects.filter(job=job).count()


def test_it_survives_a_dropped_database_connection_mid_unit_without_duplicates(
    manual_kb: Any, scripted_profiles: Any
) -> None:
    scripted_profiles()
    reference = generation_job_run(
        job_id=generation_job_create(kb=manual_kb, config=FAST, enqueue=False).pk
    )
    expected = _counts(reference)
    assert expected == (12, 12, 6, 30)

    job = generation_job_create(kb=manual_kb, config=FAST, enqueue=False)
    saved: list[int] = []
    runner.after_unit_saved = lambda job_, unit: saved.append(unit.pk)
    # Second unit: its pairs are inserted, then the connection drops before its model calls.
    drop = _drop_before("corpus_modelcall", armed=lambda: len(saved) == 1)
    with connection.execute_wrapper(drop):
        with pytest.raises((OperationalError, InterfaceError)):
            generation_job_run(job_id=job.pk)
    assert drop.fired, "the fault was never injected"

    # The worker's next task starts on a fresh connection (huey's db_task closes broken ones).
    close_old_connections()
    connection.close()
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.RUNNING  # the run died holding the job
    pairs, distinct, done, calls = _counts(job)
    assert (pairs, distinct, done) == (2, 2, 1), "the interrupted unit's rows were rolled back"
    assert calls == 5  # the first unit's: 1 questions call + 2 answers + 2 judge

    # Two minutes later the sweep sees a silent job and runs it again.
    GenerationJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - STALE_AFTER - timedelta(seconds=1)
    )
    assert job.pk in list(generation_jobs_stale())
    job = generation_job_run(job_id=job.pk)
    assert job.status == GenerationJob.Status.FINISHED, job.error
    assert _counts(job) == expected
    assert job.rows == expected[0]
