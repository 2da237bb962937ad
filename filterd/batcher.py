"""Micro-batching: concurrent sessions share onnxruntime calls.

Each `score(raw)` call joins a pending batch. A batch runs when it is full (`max_batch`),
when it has waited `max_wait_ms`, or as soon as the previous one is done while messages are
waiting. So under light load a message waits at most `max_wait_ms`, and under heavy load
batches grow by themselves while the previous one runs: the GPU (or the CPU's vector units)
sees big batches exactly when it matters.

Where a batch runs (`on_loop`): on the CPU, on the event loop itself. The text pipeline is
Python holding the GIL and the CPU model a few hundred microseconds a message, so a scoring
thread gave no parallelism, only hand-offs: the GIL passed back and forth and the loop woken
from the other thread, 0.1-0.2 ms of CPU a message (docs/performance.md). A batch is bounded
(`max_batch` messages, each cut to the model's token cap and the pipeline's byte caps), so the
loop stalls for milliseconds at most; `timeouts.scoring` then only bounds the wait for a batch.
On CUDA, where onnxruntime waits for the GPU without the GIL, batches go to `executor`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, NamedTuple

from filterd import metrics

if TYPE_CHECKING:   # the model is the pipeline's; the batcher only passes its work on
    from filterd.pipeline.scorer import Model as ScoringModel
    from filterd.pipeline.text import Prepared

log = logging.getLogger(__name__)


def runs_on_loop(run_on: str, scorer: ScoringModel) -> bool:
    """config scoring.run_on: "loop", "thread", or "auto": the loop unless the model is on CUDA."""
    if run_on == "auto":
        return getattr(scorer, "provider", "CPUExecutionProvider") == "CPUExecutionProvider"
    return run_on == "loop"


class Scored(NamedTuple):
    """One message's result from its batch: the probability and, when an explanation was
    asked for, what it needs (the whole network's logit without a user's own term, and the
    prepared message with its n-gram text), so that explaining runs neither the text
    pipeline nor the model again."""

    probability: float
    logit: float = 0.0
    prepared: Prepared | None = None    # kept (keep_wide) for an explanation


class Batcher:
    """`await batcher.score(raw)` → spam probability; batches run on the loop or in `executor`
    (which also runs explanations: scan.py)."""

    def __init__(self, scorer: ScoringModel, max_batch: int = 32, max_wait_ms: float = 2.0,
                 executor: Executor | None = None, on_loop: bool = False) -> None:
        self.scorer = scorer
        self.on_loop = on_loop       # run batches on the event loop, not in `executor`
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.executor = executor
        self._pending: list[tuple[bytes, asyncio.Future[Scored], str | None, bool]] = []
        # learning.per_user: a user's own term of the logit (learning/teacher.py), or None
        self.adjust: Callable[[str | None, Prepared], float] | None = None
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
        for _, fut, _user, _why in pending:
            if not fut.done():
                fut.set_exception(RuntimeError("scoring stopped"))

    async def score(self, raw: bytes, user: str | None = None) -> float:
        """`user`: whose scan this is (spamd `User:`), for their own lessons (per_user)."""
        return (await self.scored(raw, user)).probability

    async def scored(self, raw: bytes, user: str | None = None, explain: bool = False) -> Scored:
        """The message's Scored; `explain`: keep what an explanation needs."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[Scored] = loop.create_future()
        self._pending.append((raw, fut, user, explain))
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
        self._pending = [item for item in self._pending if not item[1].done()]
        if not self._pending or self._running:
            return
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        assert self._loop is not None
        raws, futures = [item[0] for item in batch], [item[1] for item in batch]
        users, explains = [item[2] for item in batch], [item[3] for item in batch]
        if self.on_loop:
            try:
                results = self._run(raws, users, explains)
            except Exception as exc:  # noqa: BLE001 - the batch's callers get the error
                self._finish(futures, [], exc)
            else:
                self._finish(futures, results, None)
            return
        self._running = True
        job = self._loop.run_in_executor(self.executor, self._run, raws, users, explains)
        job.add_done_callback(lambda done: self._done(done, futures))

    def _run(self, raws: list[bytes], users: list[str | None], explains: list[bool]) -> list[Scored]:
        # On the loop, or in a worker thread (onnxruntime releases the GIL while it computes).
        prepared = [self.scorer.prepare(raw, keep_wide=True) if why else self.scorer.prepare(raw)
                    for raw, why in zip(raws, explains)]
        adjust = self.adjust if self.adjust is not None and any(users) else None
        if adjust is None and not any(explains):
            return [Scored(p) for p in self.scorer.infer(prepared)]
        site = self.scorer.infer_logits(prepared)[:, 0]
        logits = site + [adjust(user, p) for user, p in zip(users, prepared)] if adjust else site
        return [Scored(1.0 / (1.0 + math.exp(-min(max(x, -80.0), 80.0))), float(s), p if why else None)
                for x, s, p, why in zip(logits.tolist(), site.tolist(), prepared, explains)]

    def _done(self, job: asyncio.Future[list[Scored]], futures: list[asyncio.Future[Scored]]) -> None:
        self._running = False
        error = job.exception() if not job.cancelled() else asyncio.CancelledError()
        self._finish(futures, [] if error is not None else job.result(), error)

    def _finish(self, futures: list[asyncio.Future[Scored]], results: list[Scored],
                error: BaseException | None) -> None:
        metrics.BATCH_SIZE.observe(len(futures))
        for i, fut in enumerate(futures):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(results[i])
        if self._pending and self._timer is None:
            # Whatever arrived while this batch ran has waited long enough: go now (on the
            # loop, after the I/O that is ready, so that a backlog is not one long stall).
            assert self._loop is not None
            self._timer = self._loop.call_later(0, self._flush)
