"""Gather the checks that fall due together across concurrent streams into one model call.

Every stream's monitor awaits its own check; a reader behind a :class:`MicroBatcher` collects
whatever is submitted while the previous batch runs (or within the same turn of the event loop)
and runs it as one batch in a worker thread, so the event loop keeps moving other streams while
the model computes, and a busy gateway pays one model call per batch rather than per window.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, Sequence, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    def __init__(self, run: Callable[[Sequence[In]], Sequence[Out]], *, max_batch: int = 16,
                 name: str = "reader") -> None:
        self.run, self.max_batch = run, max_batch
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches: list[int] = []  # sizes of the batches run, for benchmarks (bounded below)

    async def submit(self, items: Sequence[In]) -> list[Out]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (another asyncio.run): nothing of the old one carries over
            self._loop, self._pending, self._worker = loop, [], None
        futures = [loop.create_future() for _ in items]
        self._pending += zip(items, futures)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return list(await asyncio.gather(*futures))

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let the checks due in this turn of the loop join the first batch
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            live = [(x, f) for x, f in batch if not f.done()]  # a cancelled stream's check is dropped
            if not live:
                continue
            if len(self.batches) < 100_000:
                self.batches.append(len(live))
            try:
                results = await loop.run_in_executor(self._pool, self.run, [x for x, _ in live])
            except Exception as exc:  # every waiting check fails alike; the monitor applies fail-open/closed
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), r in zip(live, results):
                if not f.done():
                    f.set_result(r)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
