from __future__ import annotations

import asyncio
import threading

import pytest

from raftweb.llm.limiter import FairLimiter


async def test_it_never_lets_more_than_capacity_in() -> None:
    limiter = FairLimiter(2)
    inside = 0
    peak = 0

    async def work() -> None:
        nonlocal inside, peak
        async with limiter.slot():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(work() for _ in range(7)))
    assert peak == 2
    assert (limiter.active, limiter.waiting) == (0, 0)


async def test_it_serves_in_arrival_order_and_reports_positions() -> None:
    limiter = FairLimiter(1)
    order: list[int] = []
    positions: dict[int, list[int]] = {1: [], 2: [], 3: []}
    gate = asyncio.Event()

    async def first() -> None:
        async with limiter.slot():
            await gate.wait()
            order.append(0)

    async def queued(index: int) -> None:
        async with limiter.slot(on_queue=positions[index].append):
            order.append(index)

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiters = []
    for index in (1, 2, 3):
        waiters.append(asyncio.create_task(queued(index)))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert limiter.waiting == 3
    assert limiter.position_of_next() == 4
    gate.set()
    await asyncio.gather(holder, *waiters)
    await asyncio.sleep(0.01)  # callbacks run on the loop, after the grants
    assert order == [0, 1, 2, 3]
    assert positions[1] == [1, 0]
    assert positions[2] == [2, 1, 0]
    assert positions[3] == [3, 2, 1, 0]


async def test_it_passes_the_slot_on_when_a_waiter_is_cancelled() -> None:
    limiter = FairLimiter(1)
    await limiter.acquire()
    cancelled = asyncio.create_task(limiter.acquire())
    later_positions: list[int] = []
    later = asyncio.create_task(limiter.acquire(on_queue=later_positions.append))
    await asyncio.sleep(0.01)
    assert limiter.waiting == 2
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert limiter.waiting == 1
    limiter.release()
    await asyncio.wait_for(later, 1)
    limiter.release()
    await asyncio.sleep(0.01)
    assert later_positions == [2, 1, 0]
    assert (limiter.active, limiter.waiting) == (0, 0)


def test_it_is_shared_safely_between_event_loops_in_threads() -> None:
    limiter = FairLimiter(1)
    inside = 0
    peak = 0
    lock = threading.Lock()

    async def work() -> None:
        nonlocal inside, peak
        for _ in range(5):
            async with limiter.slot():
                with lock:
                    inside += 1
                    peak = max(peak, inside)
                await asyncio.sleep(0.002)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=asyncio.run, args=(work(),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak == 1
    assert (limiter.active, limiter.waiting) == (0, 0)


def test_it_rejects_a_capacity_below_one() -> None:
    with pytest.raises(ValueError):
        FairLimiter(0)
