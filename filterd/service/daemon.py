"""Lifecycle of `filterd serve`: build the parts, serve, reload on SIGHUP, drain on SIGTERM.

One process (`workers: 1`) runs Daemon.amain() directly. With more workers, a supervisor
(service/supervisor.py) owns the listening socket, systemd's notify socket and the metrics
endpoint, and runs this same Daemon in each worker process on the socket it inherits
(service/worker.py). `filterd serve` chooses which in cli.py; this module imports neither.

Parts are built in dependency order (executor, learning, batcher, the front-ends) and
stopped in reverse, so the front-ends stop accepting and drain while the model is still
there to finish their messages. The front-ends (filterd/frontends/) all have one shape,
Frontend: this module binds their sockets and starts, reloads and stops them, and knows
no protocol.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from filterd import metrics
from filterd.batcher import Batcher, runs_on_loop
from filterd.config import Config, load_config
from filterd.errors import ConfigError
from filterd.frontends import Frontend, configured
from filterd.learning import Teacher
from filterd.learning.teacher import Learning
from filterd.service import eventloop, listeners
from filterd.service import log as logsetup
from filterd.service.model import load_scorer
from filterd.service.notify import Notifier
from filterd.service.reload import pin_restart_keys, refused, reloaded
from filterd.service.reports import Failed, Ready, Refused, Reloaded, Report

if TYPE_CHECKING:
    from filterd.pipeline.scorer import Model

log = logging.getLogger(__name__)


class Daemon:
    """One serving process: the parts, the front-ends, signals, reload and drain.

    `report(Report)` goes to the supervisor in a worker (service/worker.py); standalone the
    Daemon says it itself (log, metrics, systemd). `sock` is an already bound SMTP listening
    socket and `frontend_socks` the milter's and spamd's (worker), or None / empty.
    """

    def __init__(self, config_path: str, config: Config, *, sock: socket.socket | None = None,
                 report: Callable[[Report], None] | None = None,
                 frontend_socks: dict[str, socket.socket] | None = None) -> None:
        self.config_path, self.config, self.sock = config_path, config, sock
        self.frontend_socks = frontend_socks or {}   # milter/spamd sockets from the supervisor
        self.frontends: list[Frontend] = []           # started, in order: smtp, milter, spamd
        self.standalone = report is None
        self.notifier = Notifier() if report is None else Notifier(address="")
        self.report = report or self._say
        self.stopping = asyncio.Event()
        self.reload_lock = asyncio.Lock()
        self.address = ""
        self.batcher: Any = None
        # The learning engine spamd TELL teaches (filterd.learning.Teacher): serve() makes it
        # the `learning` section's store (filterd/learning/teacher.py) unless one was set
        # before (the in-process tests' small engine); None with `learning: null`.
        self.teacher: Teacher | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.learning: Learning | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- building and stopping ------------------------------------------------------------

    async def amain(self) -> int:
        """`filterd serve`: signals, the model the config names, then serve() until stopped."""
        loop = asyncio.get_running_loop()
        self._add_signals()
        try:   # removed only after serve() has drained: a second SIGTERM must reach _drain
            try:
                scorer = await loop.run_in_executor(None, load_scorer, self.config)
            except ConfigError as exc:
                self.report(Failed(f"cannot start: {exc}"))
                return 1
            return await self.serve(scorer)
        finally:
            self._remove_signals()

    async def serve(self, scorer: Model) -> int:
        """Build the parts around a loaded `scorer`, listen, report Ready, and drain once
        stop() is called. The in-process test fixture runs this too (without signals)."""
        async with AsyncExitStack() as stack:
            self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="filterd-score")
            stack.callback(self.executor.shutdown, wait=False, cancel_futures=True)
            if self.config.learning is not None:   # null: no learning, TELL unavailable
                self.learning = Learning(self.config.learning)
                await self.learning.start(scorer)
                stack.push_async_callback(self.learning.stop)
                self.teacher = self.teacher or self.learning    # what spamd TELL teaches
            self.batcher = await self._start_batcher(self.config, scorer)
            stack.push_async_callback(lambda: self.batcher.stop())
            stack.push_async_callback(self._drain)   # the front-ends that started
            failed = await self._start_frontends()
            if failed:
                self.report(Failed(failed))
                return 1
            if self.standalone:
                stack.callback(metrics.serve(self.config.metrics))
            self.report(Ready(scorer.version, scorer.provider, self.address))
            await self.stopping.wait()
        return 0

    async def _start_batcher(self, config: Config, scorer: Model) -> Batcher:
        batcher = Batcher(scorer, config.scoring.max_batch, config.scoring.max_wait_ms,
                          self.executor, on_loop=runs_on_loop(config.scoring.run_on, scorer))
        if self.learning is not None and self.learning.config.per_user:
            batcher.adjust = self.learning.adjustment    # a user's lessons on their scans
        await batcher.start()
        return batcher

    async def _start_frontends(self) -> str | None:
        """The front-ends the config turns on, each on its socket (inherited from the
        supervisor, or bound here); what went wrong, if one cannot listen."""
        socks = {"smtp": self.sock, **self.frontend_socks}
        for frontend, address in configured(self.config, self.batcher, self.teacher):
            sock = socks.get(frontend.name)
            try:
                await frontend.start(sock or listeners.bind(address)[0], owned=sock is None)
            except OSError as exc:
                return f"cannot listen on {address}: {exc}"
            self.frontends.append(frontend)
            if self.stopping.is_set():   # a stop signal while it started
                frontend.close()
            log.info("%s listening on %s", frontend.name, frontend.address)
        self.address = self.frontends[0].address
        return None

    async def _drain(self) -> None:
        """Each front-end stops accepting and lets what it is handling finish until
        timeouts.shutdown (docs/operations.md, "Stopping"); then the reload tasks still running end."""
        deadline = asyncio.get_running_loop().time() + self.config.timeouts.shutdown
        await asyncio.gather(*(f.stop(deadline) for f in self.frontends))
        await asyncio.sleep(0.1)  # let connection_lost run and the session tasks unwind
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- signals -------------------------------------------------------------------------

    def _add_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def stop(self) -> None:
        """First call: drain gracefully. Second call: close everything with 421 now."""
        if self.stopping.is_set():
            log.warning("second stop signal: closing all sessions with 421 now")
            for frontend in self.frontends:
                frontend.cut()
            return
        self.notifier.stopping()
        log.info("stopping (up to %gs for transactions in flight)", self.config.timeouts.shutdown)
        for frontend in self.frontends:
            frontend.close()   # a client accepted from here on is refused, not served
        self.stopping.set()

    def _on_hup(self) -> None:
        if not self.frontends:
            log.warning("SIGHUP ignored: still starting")
        elif not self.stopping.is_set():
            self._task(self.reload())

    def _task(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task that _drain() cancels if it is still running at the end."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- reload --------------------------------------------------------------------------

    async def reload(self) -> None:
        async with self.reload_lock:
            self.notifier.reloading()
            try:
                config, notes = pin_restart_keys(self.config, load_config(self.config_path))
                scorer = await asyncio.get_running_loop().run_in_executor(None, load_scorer, config)
            except ConfigError as exc:
                self.report(Refused(str(exc)))
                return
            for note in notes:   # with workers, the supervisor says it once
                log.log(logging.WARNING if self.standalone else logging.DEBUG, "reload: %s", note)
            if self.learning is not None:     # the lessons made on this model move it too
                await self.learning.attach(scorer)
            batcher = await self._start_batcher(config, scorer)
            old = self.batcher
            for frontend in self.frontends:
                await frontend.reconfigure(config, batcher)
            self.config, self.batcher = config, batcher
            logsetup.set_level(config.log.level)
            self.report(Reloaded(scorer.version, scorer.provider))
            self._task(self._retire(old))

    async def _retire(self, batcher: Batcher) -> None:
        """Stop the old batcher once no front-end handles a message with it any more."""
        try:
            await asyncio.gather(*(f.released(batcher) for f in self.frontends))
        finally:
            await batcher.stop()

    def _say(self, report: Report) -> None:
        """Standalone: what a worker would tell its supervisor goes to the log and systemd."""
        match report:
            case Ready(version, provider, address):
                metrics.MODEL.info({"version": version, "provider": provider})
                log.info("ready: listening on %s, model %s on %s, %s event loop", address, version,
                         provider, eventloop.name(self.config.event_loop))
                self.notifier.ready(f"listening on {address}, model {version}")
            case Reloaded(version, provider):
                reloaded(self.notifier, version, provider)
            case Refused(why):
                refused(self.notifier, why)
            case Failed(why):
                log.error("%s", why)
