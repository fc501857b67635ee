"""raftweb.core.memo: one load for concurrent callers, stale-while-reloading, clear wins."""

from __future__ import annotations

import asyncio
import time

import pytest

from raftweb.core.memo import Memo


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_first_callers_share_one_load() -> None:
    memo: Memo[str, int] = Memo(lambda: 60.0)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 42

    async def main() -> list[int]:
        return await asyncio.gather(*(memo.aget("k", load) for _ in range(20)))

    assert _run(main()) == [42] * 20
    assert calls == 1
    assert _run(memo.aget("k", load)) == 42 and calls == 1  # kept


def test_an_expired_value_is_reloaded_once_while_others_use_the_old_one() -> None:
    ttl = 60.0
    memo: Memo[str, int] = Memo(lambda: ttl)
    values = iter([1, 2, 3])
    release = asyncio.Event

    async def main() -> tuple[int, list[int], int]:
        gate = release()

        async def first() -> int:
            return next(values)

        async def slow() -> int:
            await gate.wait()
            return next(values)

        assert await memo.aget("k", first) == 1
        nonlocal ttl
        ttl = 0.0001
        time.sleep(0.001)
        reloading = asyncio.ensure_future(memo.aget("k", slow))
        await asyncio.sleep(0)  # the reload has started and waits on the gate
        others = await asyncio.gather(*(memo.aget("k", slow) for _ in range(5)))
        gate.set()
        return await reloading, others, memo.loads

    reloaded, others, loads = _run(main())
    assert others == [1] * 5  # nobody waited for the reload, nobody started another
    assert reloaded == 2
    assert loads == 2


def test_a_failed_load_reaches_every_waiter_and_is_not_kept() -> None:
    memo: Memo[str, int] = Memo(lambda: 60.0)
    attempts = 0

    async def broken() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("profile missing")

    async def main() -> list[object]:
        return await asyncio.gather(
            *(memo.aget("k", broken) for _ in range(3)), return_exceptions=True
        )

    results = _run(main())
    assert all(isinstance(r, RuntimeError) for r in results) and attempts == 1

    async def fixed() -> int:
        return 7

    assert _run(memo.aget("k", fixed)) == 7


def test_a_load_that_started_before_clear_is_not_kept() -> None:
    memo: Memo[str, str] = Memo(lambda: 60.0)

    async def main() -> tuple[str, str]:
        async def old() -> str:
            await asyncio.sleep(0.02)
            return "before the change"

        loading = asyncio.ensure_future(memo.aget("k", old))
        await asyncio.sleep(0.005)
        memo.clear()  # the row changed while it was being read

        async def new() -> str:
            return "after the change"

        return await loading, await memo.aget("k", new)

    assert _run(main()) == ("before the change", "after the change")


def test_a_waiter_loads_itself_when_the_loading_caller_is_cancelled() -> None:
    memo: Memo[str, int] = Memo(lambda: 60.0)

    async def main() -> int:
        async def hangs() -> int:
            await asyncio.sleep(10)
            return 1

        async def quick() -> int:
            return 2

        loader = asyncio.ensure_future(memo.aget("k", hangs))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(memo.aget("k", quick))
        await asyncio.sleep(0)
        loader.cancel()  # e.g. the stop button on the turn that was loading
        with pytest.raises(asyncio.CancelledError):
            await loader
        return await asyncio.wait_for(waiter, 2)

    assert _run(main()) == 2


def test_a_zero_ttl_reads_every_time() -> None:
    memo: Memo[str, int] = Memo(lambda: 0.0)
    n = 0

    async def load() -> int:
        nonlocal n
        n += 1
        return n

    assert [_run(memo.aget("k", load)) for _ in range(3)] == [1, 2, 3]
