"""Checks that fall due together across streams run as one batch, off the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Sequence

import pytest

from guard.detectors.batcher import MicroBatcher


def test_concurrent_submissions_share_one_batch_and_keep_their_order() -> None:
    calls: list[list[int]] = []
    threads: set[str] = set()

    def run(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        threads.add(threading.current_thread().name)
        return [x * 10 for x in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=8)

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(3))))

    got = asyncio.run(main())
    assert got == [[0, 1000], [10, 1010], [20, 1020]]
    assert calls == [[0, 100, 1, 101, 2, 102]]  # one model call for three streams' checks
    assert threads and threading.main_thread().name not in threads  # the event loop never ran the model
    batcher.close()


def test_batches_are_capped_and_a_failure_reaches_every_waiting_check() -> None:
    sizes: list[int] = []

    def run(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        if 13 in items:
            raise RuntimeError("reader down")
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4)

    async def main() -> list[object]:
        return list(await asyncio.gather(*(batcher.submit([i]) for i in range(16)), return_exceptions=True))

    got = asyncio.run(main())
    assert sizes == [4, 4, 4, 4]
    failed = [i for i, g in enumerate(got) if isinstance(g, RuntimeError)]
    assert failed == [12, 13, 14, 15]  # the batch that held 13, and only it
    assert [g for g in got if not isinstance(g, Exception)] == [[i] for i in range(12)]
    # a later event loop (another asyncio.run) starts clean
    assert asyncio.run(batcher.submit([1, 2])) == [1, 2]
    batcher.close()


def test_a_cancelled_check_is_dropped_not_run() -> None:
    seen: list[int] = []
    gate = threading.Event()

    def run(items: Sequence[int]) -> list[int]:
        seen.extend(items)
        gate.wait(5)
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=1)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.05)  # the first batch is running
        second = asyncio.ensure_future(batcher.submit([2]))
        await asyncio.sleep(0)
        second.cancel()
        gate.set()
        assert await first == [1]
        with pytest.raises(asyncio.CancelledError):
            await second
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert seen == [1]
    batcher.close()
