"""The Teacher a serving process hands its front-ends: learning.Learner on its own thread.

Everything that touches the store (fsync, Redis) or featurizes a lesson runs on one
thread per process, never on the event loop, so a burst of TELLs never holds up a scan.
At most MAX_WAITING lessons wait for that thread; more wait on the semaphore, each held
by its own client connection (bounded by max_connections), so memory stays bounded too.
Every POLL_S the thread applies what other processes taught (a lesson reaches every worker
within a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from filterd import metrics
from filterd.config import LearningConfig
from filterd.learning import Label, LearningError
from filterd.learning.learner import Learner

log = logging.getLogger(__name__)

POLL_S = 0.2
MAX_WAITING = 16


def open_store(url: str) -> Any:
    """The store `learning.store` names: a directory, or Redis (redis://, rediss://, unix://)."""
    if "://" in url:
        from filterd.learning.redisstore import RedisStore

        return RedisStore(url)
    from filterd.learning.dirstore import DirStore

    return DirStore(url)


def status(config: LearningConfig, scorer: Any) -> str:
    """One line for `filterd check-config`: the store, and what a process would make of it."""
    learner = Learner(open_store(config.store), scorer, per_user=config.per_user,
                      max_lessons=config.max_lessons, max_users=config.max_users)
    learner.poll()
    where = f"learning store {learner.store.describe()}"
    if learner.broken:
        return f"{where}: refused ({learner.broken}); filterd would scan on the shipped weights"
    if learner.away:
        return f"{where}: unreachable now ({learner.away})"
    here = sum(r.model == str(scorer.version) for r in learner.lessons.values())
    return f"{where}: {len(learner.lessons)} lesson(s), {here} made on this model"


class Learning:
    """start(scorer) / attach(scorer) on reload / stop(); learn() and forget() as a Teacher."""

    def __init__(self, config: LearningConfig) -> None:
        self.config = config
        self.learner: Learner | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filterd-learn")
        self._slots = asyncio.Semaphore(MAX_WAITING)
        self._poller: asyncio.Task[None] | None = None

    async def start(self, scorer: Any) -> None:
        def build() -> Learner:
            learner = Learner(open_store(self.config.store), scorer, per_user=self.config.per_user,
                              max_lessons=self.config.max_lessons, max_users=self.config.max_users)
            learner.poll()
            return learner

        self.learner = await self._run(build)
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def attach(self, scorer: Any) -> None:
        """A reload's new model: the lessons made on it move its weights, the others not."""
        if self.learner is not None:
            await self._run(self.learner.attach, scorer)

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def learn(self, raw: bytes, label: Label, user: str | None = None) -> bool:
        assert self.learner is not None
        return await self._counted(("learned", "already_learned"), self.learner.learn,
                                   bytes(raw), label, user)

    async def forget(self, raw: bytes, user: str | None = None) -> bool:
        assert self.learner is not None
        return await self._counted(("forgotten", "not_learned"), self.learner.forget, bytes(raw), user)

    async def _counted(self, results: tuple[str, str], fn: Any, *args: Any) -> bool:
        """Run a lesson on the learning thread, counted in filterd_lessons_total{result}."""
        async with self._slots:
            try:
                changed = bool(await self._run(fn, *args))
            except LearningError:
                metrics.LESSONS.labels("failed").inc()
                raise
        metrics.LESSONS.labels(results[0] if changed else results[1]).inc()
        return changed

    def adjustment(self, user: str | None, prepared: Any) -> float:
        """A user's own term of the logit of one prepared message (on the event loop: a
        lookup of the message's n-grams in the user's published delta, if one is held)."""
        if self.learner is None or user is None:
            return 0.0
        return self.learner.users.adjustment(user, prepared.feat_ids, prepared.feat_w)

    async def _poll(self) -> None:
        assert self.learner is not None
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self._run(self.learner.poll)
            except Exception:   # one bad poll must not end the polling
                log.exception("learning: polling the store failed")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


__all__ = ["Learning", "LearningError", "open_store"]
