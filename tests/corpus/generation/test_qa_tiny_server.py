"""One real generation job against `transformers serve` with the tiny random model: its output
is gibberish, so the job must finish, reject every row as "unparseable", and crash nothing."""

from __future__ import annotations

import pytest

from corpus.generation.runner import generation_job_run
from corpus.generation.services import generation_job_create
from corpus.models import GenerationUnit, ModelCall, QAPair
from raftweb.core.services import profile_update

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_it_runs_a_real_job_on_gibberish_and_rejects_every_row(
    manual_kb, tiny_openai_server
) -> None:  # type: ignore[no-untyped-def]
    for role in ("teacher", "judge"):
        profile_update(
            role=role,
            user=None,
            backend="openai",
            model=tiny_openai_server.model,
            base_url=tiny_openai_server.base_url,
            api_key="x",
            max_concurrency=2,
            timeout_s=120,
        )
    job = generation_job_create(
        kb=manual_kb,
        enqueue=False,
        config={
            "limit_chunks": 2,
            "questions_per_chunk": 2,
            "hard_negative_share": 0.0,
            "p": 1.0,
            "question_max_tokens": 48,
            "max_new_tokens": 24,
            "judge_max_tokens": 16,
            "max_concurrency": 2,
        },
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished", job.error
    assert job.units.filter(state=GenerationUnit.State.DONE).count() == 2
    pairs = list(QAPair.objects.filter(job=job))
    assert pairs, "the tiny model's questions should parse into at least one row"
    assert all(p.status == "rejected" and p.auto_reject_reason == "unparseable" for p in pairs)
    assert all(p.judge_score is None for p in pairs)
    calls = ModelCall.objects.filter(job=job)
    assert calls.count() == job.calls and all(c.role == "teacher" for c in calls)
    assert job.tokens_in > 0 and job.tokens_out > 0
