"""Micro-batching: concurrent sessions share onnxruntime calls, which run in an executor.

Each `score(raw)` call joins a pending batch. A batch is handed to the executor when it
is full (`max_batch`), when it has waited `max_wait_ms`, or as soon as a worker frees up
while messages are waiting (one batch runs at a time). So under light load a message waits at most `max_wait_ms`,
and under heavy load batches grow by themselves while the previous one runs: the GPU (or
the CPU's vector units) sees big batches exactly when it matters.

The text pipeline (`Scorer.prepare`) runs in the executor too, inside the batch job: the
event loop only appends to a list and resolves futures.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Any

from filterd.service import metrics

log = logging.getLogger(__name__)


class Batcher:
    """`await batcher.score(raw)` → spam probability; batches go to `executor`."""

    def __init__(self, scorer: Any, max_batch: int = 32, max_wait_ms: float = 2.0,
                 executor: Executor | None = None) -> None:
        self.scorer = scorer
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.executor = executor
        self._pending: list[tuple[bytes, asyncio.Future[float]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running = False   # one batch in the executor at a time; the next one grows meanwhile
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Fail what never got to run; batches already in the executor finish on their own."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        for _, fut in pending:
            if not fut.done():
                fut.set_exception(RuntimeError("scoring stopped"))

    async def score(self, raw: bytes) -> float:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[float] = loop.create_future()
        self._pending.append((raw, fut))
        if not self._running:
            if len(self._pending) >= self.max_batch or self.max_wait == 0:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self.max_wait, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Messages whose session gave up (timeout, disconnect) are not scored.
        self._pending = [(raw, fut) for raw, fut in self._pending if not fut.done()]
        if not self._pending or self._running:
            return
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        assert self._loop is not None
        self._running = True
        job = self._loop.run_in_executor(self.executor, self._run, [raw for raw, _ in batch])
        job.add_done_callback(lambda done: self._done(done, [fut for _, fut in batch]))

    def _run(self, raws: list[bytes]) -> list[float]:
        # In a worker thread: onnxruntime releases the GIL while it computes.
        prepared = [self.scorer.prepare(raw) for raw in raws]
        return list(self.scorer.infer(prepared))

    def _done(self, job: asyncio.Future[list[float]], futures: list[asyncio.Future[float]]) -> None:
        self._running = False
        metrics.BATCH_SIZE.observe(len(futures))
        error = job.exception() if not job.cancelled() else asyncio.CancelledError()
        for i, fut in enumerate(futures):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(float(job.result()[i]))
        if self._pending:
            # Whatever arrived while this batch ran has waited long enough: go now.
            self._flush()
