"""The query micro-batcher: each caller gets its own result, errors reach only their caller,
concurrent callers share batches, and a lone call is not delayed."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from raftweb.retrieval import load_embedder
from raftweb.retrieval.batcher import MicroBatcher


class Recorder:
    """A batch function that squares numbers, records each batch, and fails on negatives."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        if any(i < 0 for i in items):
            raise ValueError(f"negative in {items}")
        return [i * i for i in items]


def test_it_resolves_each_concurrent_caller_with_its_own_result() -> None:
    fn = Recorder(delay_s=0.02)
    batcher = MicroBatcher(fn, max_batch=16, max_wait_s=0.005)
    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(batcher, range(200)))
    assert results == [i * i for i in range(200)]
    assert sum(len(b) for b in fn.batches) == 200
    # While one batch ran, the others queued up: far fewer batches than calls.
    assert len(fn.batches) < 100
    assert max(len(b) for b in fn.batches) > 1
    assert all(len(b) <= 16 for b in fn.batches)


def test_it_sends_an_error_only_to_the_caller_whose_item_caused_it() -> None:
    fn = Recorder(delay_s=0.01)
    batcher = MicroBatcher(fn, max_batch=32, max_wait_s=0.01)
    items = [3, -1, 4, 5, -2, 6] * 5
    futures = batcher.submit_many(items)
    for item, fut in zip(items, futures, strict=True):
        if item < 0:
            with pytest.raises(ValueError, match=f"negative in \\[{item}\\]"):
                fut.result(timeout=10)
        else:
            assert fut.result(timeout=10) == item * item


def test_it_does_not_delay_a_lone_call_on_an_idle_batcher() -> None:
    # A long gathering wait would show in every lone call if the batcher waited for company.
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch=32, max_wait_s=0.5)
    batcher(1)  # starts the worker thread
    started = time.perf_counter()
    for i in range(5):
        assert batcher(i) == i * i
    assert (time.perf_counter() - started) / 5 < 0.1  # far below the 0.5 s wait
    assert all(len(b) == 1 for b in fn.batches)


def test_it_serves_coroutines_without_blocking_the_event_loop() -> None:
    fn = Recorder(delay_s=0.05)
    batcher = MicroBatcher(fn, max_batch=64, max_wait_s=0.002)

    async def main() -> tuple[list[int], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(batcher.acall(i) for i in range(50)))
        tick_task.cancel()
        return list(results), ticks

    results, ticks = asyncio.run(main())
    assert results == [i * i for i in range(50)]
    assert ticks >= 5  # the loop kept running while the batches were encoded


def test_it_reports_a_wrong_result_count_to_every_caller() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [], max_batch=4)
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        batcher(7)


def test_it_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_wait_s=-1)


def test_it_gives_concurrent_embedder_callers_their_own_vectors() -> None:
    """The real embedder: vectors from concurrent batched queries equal one-by-one encoding."""
    embedder = load_embedder()
    queries = [f"how do I change setting number {i} on the phone" for i in range(24)]
    alone = embedder.encode(queries, batch_size=1)
    before = embedder.query_batcher.batches
    with ThreadPoolExecutor(max_workers=24) as pool:
        batched = list(pool.map(embedder.encode_query, queries))
    for want, got in zip(alone, batched, strict=True):
        assert np.allclose(want, got, atol=1e-4)
    assert embedder.query_batcher.batches - before < 24  # some queries shared a batch
    many = embedder.encode_queries(queries[:5])
    assert many.shape == (5, embedder.dimension)
    assert np.allclose(many, alone[:5], atol=1e-4)


def test_it_encodes_queries_in_a_child_process_and_restarts_a_dead_one() -> None:
    """RAFTWEB_EMBED_PROCESS: same vectors as in-process; a killed child is replaced."""
    from raftweb.retrieval.embedder import resolve_model_path
    from raftweb.retrieval.query_process import QueryProcess

    embedder = load_embedder()
    queries = ["how do I turn on GPS", "reset the phone to factory settings"]
    child = QueryProcess(resolve_model_path("all-MiniLM-L6-v2"))
    try:
        got = child.encode(queries)
        assert np.allclose(got, embedder.encode(queries), atol=1e-4)
        assert child._proc is not None
        child._proc.kill()
        child._proc.wait(5)
        assert np.allclose(child.encode(queries[:1]), got[:1], atol=1e-4)
    finally:
        child.close()
