"""Generation against a real OpenAI-compatible loopback server that misbehaves the way model
servers do: 500, 429, a reply slower than the timeout, malformed judge JSON, empty answers,
bodies cut short and replies without choices."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from corpus.generation.runner import generation_job_run
from corpus.generation.services import generation_job_create
from corpus.models import QAPair
from raftweb.core.services import profile_update


class BadServer:
    """Per call kind, a list of steps (the last repeats): an int status, "slow", "truncated"
    (a 200 whose JSON body is cut in half), "no-choices", or reply text."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.hits: dict[str, int] = {}
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def kind(self, body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        if "question-answer pair generator" in system:
            return "questions"
        return "judge" if "grader" in system else "answer"

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind = self.kind(body)
        steps = self.script[kind]
        n = self.hits.get(kind, 0)
        self.hits[kind] = n + 1
        step = steps[min(n, len(steps) - 1)]
        if step == "slow":
            await asyncio.sleep(3)
            step = steps[-1]
        if isinstance(step, int):
            return web.json_response(
                {"error": {"message": f"scripted {step}"}},
                status=step,
                headers={"Retry-After": "0"} if step == 429 else {},
            )
        if step == "truncated":
            text = json.dumps(self.reply("cut short"))
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        if step == "no-choices":
            return web.json_response({**self.reply(""), "choices": []})
        return web.json_response(self.reply(step))

    @staticmethod
    def reply(content: str) -> dict[str, Any]:
        return {
            "id": "x",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "bad",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.chat)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@pytest.fixture
def bad_server() -> Iterator[Any]:
    servers: list[BadServer] = []

    def make(script: dict[str, list[Any]]) -> BadServer:
        server = BadServer(script)
        server.start()
        servers.append(server)
        for role in ("teacher", "judge"):
            profile_update(
                role=role,
                user=None,
                backend="openai",
                model=f"bad-{id(server)}",
                base_url=f"http://127.0.0.1:{server.port}/v1",
                api_key="x",
                timeout_s=1.5,
            )
        return server

    yield make
    for s in servers:
        s.stop()


CHUNK_QUOTE = "press and hold the Side key and the Volume down key together"


def test_it_survives_500_429_slow_replies_malformed_judges_and_empty_answers(
    manual_kb, bad_server
) -> None:  # type: ignore[no-untyped-def]
    server = bad_server(
        {
            "questions": [
                500,
                429,
                json.dumps(["How do I turn the phone off?", "What do I tap to confirm?"]),
            ],
            "answer": [
                "slow",
                "",
                f"It says ##begin_quote##{CHUNK_QUOTE}##end_quote##.\n<ANSWER>: Hold both keys",
            ],
            "judge": ["{score: oops", '{"score": "great"}', '{"score": 5, "reason": "ok"}'],
        }
    )
    job = generation_job_create(
        kb=manual_kb,
        enqueue=False,
        config={
            "limit_chunks": 1,
            "questions_per_chunk": 2,
            "hard_negative_share": 0,
            "p": 1.0,
            "max_concurrency": 1,
        },
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "finished", job.error
    pairs = sorted(QAPair.objects.filter(job=job), key=lambda p: p.question_index or 0)
    assert len(pairs) == 2
    # the slow reply timed out and was retried; the retry got the empty answer
    by_reason = {p.auto_reject_reason: p for p in pairs}
    assert set(by_reason) == {"empty answer", ""}
    good = by_reason[""]
    assert good.quote_status == "verified" and good.status == "pending"
    # two malformed judge replies: one retry, then unscored — never 0
    assert good.judge_score is None and "could not be parsed" in good.judge_reason
    assert by_reason["empty answer"].judge_score is None
    assert server.hits["questions"] == 3 and server.hits["judge"] == 2
    assert job.calls >= 4


def test_it_fails_the_chunk_not_the_process_when_the_teacher_keeps_failing(
    manual_kb, bad_server
) -> None:  # type: ignore[no-untyped-def]
    bad_server({"questions": [503], "answer": [503], "judge": [503]})
    job = generation_job_create(
        kb=manual_kb, enqueue=False, config={"limit_chunks": 1, "hard_negative_share": 0}
    )
    job = generation_job_run(job_id=job.pk)
    assert job.status == "failed" and "503" in job.error
    assert not QAPair.objects.filter(job=job).exists()


GOOD_ANSWER = f"It says ##begin_quote##{CHUNK_QUOTE}##end_quote##.\n<ANSWER>: Hold both keys"


def test_malformed_replies_are_retried_and_a_failed_answer_keeps_its_siblings(
    manual_kb, bad_server
) -> None:  # type: ignore[no-untyped-def]
    from corpus.generation.services import generation_job_resume
    from corpus.models import GenerationUnit

    questions = ["How do I turn the phone off?", "What do I tap?", "What keys do I hold?"]
    # One answer at a time, in question order: the first gets a cut-short body and a reply
    # without choices before it succeeds (retried like a 5xx); the second stays malformed past
    # the retries (1 + 3 attempts); the third is fine.
    server = bad_server(
        {
            "questions": ["I'm sorry, I can't help with that.", json.dumps(questions)],
            "answer": ["truncated", "no-choices", GOOD_ANSWER] + ["truncated"] * 4 + [GOOD_ANSWER],
            "judge": ['{"score": 5, "reason": "ok"}'],
        }
    )
    config = {
        "limit_chunks": 1,
        "questions_per_chunk": 3,
        "hard_negative_share": 0,
        "p": 1.0,
        "max_concurrency": 1,
        "judge_enabled": False,
    }
    # The apology is no question: nothing is saved, and the chunk says why.
    sorry = generation_job_run(
        job_id=generation_job_create(kb=manual_kb, enqueue=False, config=config).pk
    )
    assert not QAPair.objects.filter(job=sorry).exists() and server.hits["questions"] == 1
    assert "no usable questions" in GenerationUnit.objects.get(job=sorry).notes[0]

    job = generation_job_run(
        job_id=generation_job_create(kb=manual_kb, enqueue=False, config=config).pk
    )
    unit = GenerationUnit.objects.get(job=job)
    assert unit.state == "failed" and "1 of 3 questions failed" in unit.error
    assert "malformed reply" in unit.error
    assert sorted(QAPair.objects.filter(job=job).values_list("question_index", flat=True)) == [
        0,
        2,
    ]
    assert unit.rows == 2 and unit.questions == questions

    server.script["answer"] = [GOOD_ANSWER]
    generation_job_resume(job=job, enqueue=False)
    job = generation_job_run(job_id=job.pk)
    unit.refresh_from_db()
    assert job.status == "finished" and unit.state == "done" and unit.rows == 3
    pairs = QAPair.objects.filter(job=job).order_by("question_index")
    assert [p.question for p in pairs] == questions  # the stored questions, none asked again
    assert server.hits["questions"] == 2 and job.rows == 3
