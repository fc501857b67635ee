from __future__ import annotations

import threading
import time

from raftweb.llm.base import BackendUnavailable
from raftweb.raft.pipeline import (
    ChunkInput,
    ChunkStore,
    GenerationConfig,
    PipelineRunner,
    run_chunks,
)
from tests.fixtures.raft import default_reply

_TOPICS = [
    "camera lens",
    "battery charging",
    "screen brightness",
    "keyboard layout",
    "speaker volume",
    "modem firmware",
    "wireless pairing",
    "storage cleanup",
    "parental controls",
    "night mode",
    "fingerprint sensor",
    "backup schedule",
]
_VERBS = [
    "adjust",
    "inspect",
    "enable",
    "configure",
    "replace",
    "review",
    "schedule",
    "reset",
    "measure",
    "unlock",
    "calibrate",
    "archive",
]
TEXTS = {
    i: (
        f"The {_TOPICS[i]} chapter tells owners how to {_VERBS[i]} things. "
        f"Open {_TOPICS[(i * 5) % 12].split()[0]} settings and {_VERBS[(i * 7) % 12]} within {i * 13 + 2} seconds. "
        f"Unique marker zq{i}x closes paragraph {_VERBS[(i * 3) % 12]}-{_TOPICS[(i * 11) % 12]}."
    )
    for i in range(12)
}
STORE = ChunkStore(pool=list(TEXTS), text_of=TEXTS.__getitem__)


def _chunks(ids=range(4)):  # type: ignore[no-untyped-def]
    return [
        ChunkInput(id=i, text=TEXTS[i], hard_negatives=((i + 1) % 12, (i + 2) % 12)) for i in ids
    ]


def test_it_generates_verified_judged_rows(scripted) -> None:  # type: ignore[no-untyped-def]
    teacher, judge = scripted(), scripted()
    config = GenerationConfig(questions_per_chunk=3, p=1.0, num_distractors=3, seed=5)
    results = run_chunks(_chunks(), teacher=teacher, judge=judge, config=config, store=STORE)
    assert sorted(r.chunk_id for r in results) == [0, 1, 2, 3]
    for res in results:
        assert not res.error and len(res.rows) == 3
        assert res.tokens_in > 0 and res.tokens_out > 0
        assert [c.role for c in res.calls].count("judge") == 3
        for row in res.rows:
            assert row.context_ids[row.oracle_index] == res.chunk_id
            assert len(row.context_ids) == 4
            assert row.parsed_ok and row.quote_status == "verified"
            assert row.judge_score == 4 and row.auto_reject_reason == ""
            assert row.quote_checks[0]["doc_key"] == str(res.chunk_id)


def test_it_is_deterministic_from_the_seed(scripted) -> None:  # type: ignore[no-untyped-def]
    config = GenerationConfig(questions_per_chunk=2, p=0.5, refusal_share=0.5, seed=11)

    def contexts():  # type: ignore[no-untyped-def]
        res = run_chunks(
            _chunks(range(6)), teacher=scripted(), judge=None, config=config, store=STORE
        )
        return sorted(
            (r.chunk_id, row.question_index, tuple(row.context_ids), row.refusal)
            for r in res
            for row in r.rows
        )

    first = contexts()
    assert first == contexts()
    assert any(refusal for *_, refusal in first)


def test_it_rejects_unparseable_and_unverified_rows_and_refusals_that_answer(scripted) -> None:  # type: ignore[no-untyped-def]
    teacher, judge = scripted(), scripted()
    answers = iter(
        [
            "ñ¶ garbage without the tag",
            "I quote ##begin_quote##the moon is cheese##end_quote##.\n<ANSWER>: cheese",
            "",
        ]
    )
    teacher.script["answer"] = lambda m: next(answers)
    config = GenerationConfig(questions_per_chunk=3, p=1.0, max_concurrency=1)
    [res] = run_chunks(_chunks([0]), teacher=teacher, judge=judge, config=config, store=STORE)
    reasons = sorted(row.auto_reject_reason for row in res.rows)
    assert reasons == ["empty answer", "quote not found", "unparseable"]
    # only the parseable row was judged
    assert judge.kinds() == ["judge"]
    refusing = scripted()
    refusing.script["refusal"] = lambda m: "It is there.\n<ANSWER>: Paris"
    config = GenerationConfig(questions_per_chunk=2, p=0.0, refusal_share=1.0)
    [res] = run_chunks(_chunks([1]), teacher=refusing, judge=None, config=config, store=STORE)
    assert {row.auto_reject_reason for row in res.rows} == {"refusal expected"}
    assert all(row.oracle_index is None and 1 not in row.context_ids for row in res.rows)


def test_it_retries_an_unparseable_judge_once_then_leaves_the_row_unscored(scripted) -> None:  # type: ignore[no-untyped-def]
    teacher, judge = scripted(), scripted()
    replies = iter(["hmm", "Score: 2\nReason: vague question", "no idea", "still no idea"])
    judge.script["judge"] = lambda m: next(replies)
    config = GenerationConfig(questions_per_chunk=2, p=1.0, max_concurrency=1)
    [res] = run_chunks(_chunks([2]), teacher=teacher, judge=judge, config=config, store=STORE)
    by_index = {row.question_index: row for row in res.rows}
    assert by_index[0].judge_score == 2 and by_index[0].auto_reject_reason == "judge score < 3"
    assert by_index[1].judge_score is None and by_index[1].auto_reject_reason == ""
    assert "could not be parsed" in by_index[1].judge_reason
    assert len(judge.calls) == 4


def test_it_survives_a_teacher_that_is_down_and_a_judge_that_is_down(scripted) -> None:  # type: ignore[no-untyped-def]
    teacher, judge = scripted(), scripted()

    def down(messages):  # type: ignore[no-untyped-def]
        if "zq1x" in messages[-1].content:
            raise BackendUnavailable("teacher at http://x is down (HTTP 500)")
        return '["What is mode one about here?"]'

    def judge_down(messages):  # type: ignore[no-untyped-def]
        raise BackendUnavailable("judge 429 after retries")

    teacher.script["questions"] = down
    judge.script["judge"] = judge_down
    results = {
        r.chunk_id: r
        for r in run_chunks(
            _chunks([0, 1]),
            teacher=teacher,
            judge=judge,
            config=GenerationConfig(p=1.0),
            store=STORE,
        )
    }
    assert "teacher failed" in results[1].error and not results[1].rows
    assert not results[0].error and len(results[0].rows) == 1
    assert results[0].rows[0].judge_score is None
    assert any(c.error for c in results[0].calls if c.role == "judge")


def test_it_truncates_a_chunk_too_long_for_the_teacher(scripted) -> None:  # type: ignore[no-untyped-def]
    teacher = scripted()
    long_text = "The answer is forty two. " + "filler words " * 5000
    config = GenerationConfig(
        teacher_context_tokens=2000, max_new_tokens=800, p=1.0, questions_per_chunk=1
    )
    store = ChunkStore(pool=[0, 99], text_of={0: TEXTS[0], 99: long_text}.__getitem__)
    [res] = run_chunks(
        [ChunkInput(99, long_text)], teacher=teacher, judge=None, config=config, store=store
    )
    assert res.notes and "truncated" in res.notes[0]
    assert all(len(m.content) < 4000 for _, msgs in teacher.calls for m in msgs)
    assert res.rows and "truncated" in res.rows[0].notes[0]


def test_it_cancels_and_bounds_concurrency(scripted) -> None:  # type: ignore[no-untyped-def]
    teacher = scripted(delay_s=0.05)
    in_flight, peak = [0], [0]
    lock = threading.Lock()
    original = teacher.complete

    async def counting(messages, params=None, **kw):  # type: ignore[no-untyped-def]
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return await original(messages, params)
        finally:
            with lock:
                in_flight[0] -= 1

    teacher.complete = counting  # type: ignore[method-assign]
    config = GenerationConfig(questions_per_chunk=2, max_concurrency=3, judge_enabled=False)
    runner = PipelineRunner(teacher=teacher, judge=None, config=config, store=STORE).start()
    for chunk in _chunks(range(12)):
        runner.submit(chunk)
    runner.close()
    first = None
    while first is None:
        first = runner.get(timeout=2)
    runner.cancel()
    started = time.monotonic()
    while not runner.finished and time.monotonic() - started < 5:
        runner.get(timeout=0.5)
    runner.join(5)
    assert runner.finished
    assert peak[0] <= 3
    assert len(teacher.calls) < 12 * 3  # not every chunk ran


def test_a_failed_answer_keeps_its_siblings_and_a_resume_answers_only_the_rest(scripted) -> None:  # type: ignore[no-untyped-def]
    teacher = scripted()
    config = GenerationConfig(p=1.0, questions_per_chunk=3, judge_enabled=False)

    def flaky_answer(messages):  # type: ignore[no-untyped-def]
        if "second place" in messages[-1].content:
            raise BackendUnavailable("teacher at http://x: malformed reply (gave up)")
        return default_reply("answer", messages)

    teacher.script["answer"] = flaky_answer
    [first] = run_chunks(_chunks([0]), teacher=teacher, judge=None, config=config, store=STORE)
    assert "1 of 3 questions failed" in first.error and "kept" in first.error
    assert sorted(r.question_index for r in first.rows) == [0, 2]
    assert len(first.questions) == 3

    # Resumed with the stored questions and the answered indices: no question call, one answer.
    teacher.script.pop("answer")
    teacher.calls.clear()
    resumed = ChunkInput(
        id=0, text=TEXTS[0], questions=tuple(first.questions), answered=frozenset({0, 2})
    )
    [second] = run_chunks([resumed], teacher=teacher, judge=None, config=config, store=STORE)
    assert not second.error and teacher.kinds() == ["answer"]
    assert [(r.question_index, r.question) for r in second.rows] == [(1, first.questions[1])]


def test_a_teacher_that_apologises_writes_no_question(scripted) -> None:  # type: ignore[no-untyped-def]
    teacher = scripted()
    teacher.script["questions"] = lambda m: (
        "I'm sorry, but I can't help with that.\nCan I help with anything else?"
    )
    [res] = run_chunks(
        _chunks([0]), teacher=teacher, judge=None, config=GenerationConfig(p=1.0), store=STORE
    )
    assert res.rows == [] and res.questions == [] and teacher.kinds() == ["questions"]
    assert "no usable questions" in res.notes[0]
