"""Lifecycle of `filterd serve`: build the parts, serve, reload on SIGHUP, drain on SIGTERM.

One process (`workers: 1`) runs Daemon.amain() directly. With more workers, a supervisor
(service/supervisor.py) owns the listening socket, systemd's notify socket and the metrics
endpoint, and runs this same Daemon in each worker process on the socket it inherits
(service/worker.py). `filterd serve` chooses which in cli.py; this module imports neither.

Parts are built in dependency order (executor, learning, batcher, relay, handler, listener) and
stopped in reverse, so the listener stops accepting and sessions drain while the relay and
the model are still there to finish their transactions.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any

from filterd.service import eventloop
from filterd.service import log as logsetup
from filterd import metrics
from filterd import replies
from filterd.batcher import Batcher, runs_on_loop
from filterd.config import Config, load_config
from filterd.errors import ConfigError
from filterd.hostport import format_address, split_hostport
from filterd.learning import Teacher
from filterd.learning.teacher import Learning
from filterd.frontends.listener import Listener
from filterd.service import listeners
from filterd.service.model import load_scorer
from filterd.service.notify import Notifier
from filterd.service.reload import pin_restart_keys, refused, reloaded
from filterd.service.reports import Failed, Ready, Refused, Reloaded, Report
from filterd.frontends.smtp.gate import Gate
from filterd.frontends.smtp.handler import FilterHandler
from filterd.frontends.smtp.relay import Relay
from filterd.frontends.smtp.smtpd import greeting, smtp_factory

log = logging.getLogger(__name__)

_SHUTDOWN_LINE = replies.S421_SHUTTING_DOWN.line()


def in_transaction(session: Any) -> bool:
    """A session between MAIL FROM and the reply to its final dot (aiosmtpd resets the envelope then)."""
    return session.envelope is not None and session.envelope.mail_from is not None


def is_open(session: Any) -> bool:
    return session.transport is not None and not session.transport.is_closing()


def close_421(session: Any) -> None:
    """RFC 5321 section 3.8: a server that must shut down answers 421 and closes."""
    if is_open(session):
        session.transport.write(_SHUTDOWN_LINE)
        session.transport.close()


class Daemon:
    """One serving process: the parts, the sessions, signals, reload and drain.

    `report(Report)` goes to the supervisor in a worker (service/worker.py); standalone the
    Daemon says it itself (log, metrics, systemd). `sock` is an already bound listening
    socket (worker) or None.
    """

    def __init__(self, config_path: str, config: Config, *, sock: socket.socket | None = None,
                 report: Callable[[Report], None] | None = None,
                 frontend_socks: dict[str, socket.socket] | None = None) -> None:
        self.config_path, self.config, self.sock = config_path, config, sock
        self.frontend_socks = frontend_socks or {}   # milter/spamd sockets from the supervisor
        self.frontends: list[Listener] = []
        self.standalone = report is None
        self.notifier = Notifier() if report is None else Notifier(address="")
        self.report = report or self._say
        self.sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self.stopping = asyncio.Event()
        self.forced = asyncio.Event()
        self.reload_lock = asyncio.Lock()
        self.address = ""
        self.handler: FilterHandler | None = None
        self.gate = Gate(config)
        self.factory: Callable[[], Any] = lambda: None
        self.batcher: Any = None
        self.relay: Relay | None = None
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

    async def serve(self, scorer: Any) -> int:
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
            hostname = await greeting(self.config)
            relay = self.relay = Relay(self.config, hostname)   # connects on demand
            await relay.start()   # the pool's idle reaper; stop() QUITs the pooled connections
            stack.push_async_callback(relay.stop)
            self.handler = FilterHandler(self.config, self.batcher, relay)
            try:
                server = await self._listen(smtp_factory(self.config, self.handler, self.gate, hostname))
            except OSError as exc:
                self.report(Failed(f"cannot listen on {self.config.listen}: {exc}"))
                return 1
            stack.push_async_callback(self._drain, server)
            failed = await self._start_frontends()
            if failed:
                self.report(Failed(failed))
                return 1
            if self.standalone:
                stack.callback(metrics.serve(self.config.metrics))
            self.report(Ready(scorer.version, scorer.provider, self.address))
            await self.stopping.wait()
        return 0

    async def _start_batcher(self, config: Config, scorer: Any) -> Any:
        batcher = Batcher(scorer, config.scoring.max_batch, config.scoring.max_wait_ms,
                          self.executor, on_loop=runs_on_loop(config.scoring.run_on, scorer))
        if self.learning is not None and self.learning.config.per_user:
            batcher.adjust = self.learning.adjustment    # a user's lessons on their scans
        await batcher.start()
        return batcher

    async def _start_frontends(self) -> str | None:
        """The milter and spamd listeners the config turns on, beside the SMTP one; what
        went wrong, if one cannot listen."""
        from filterd.frontends import milter, spamd   # only when configured

        for name, section, serve in (("milter", self.config.milter, milter.serve),
                                     ("spamd", self.config.spamd, spamd.serve)):
            if section is None:
                continue
            sock = self.frontend_socks.get(name)
            listener = Listener(name, serve, self.config, self.batcher)
            listener.teacher = self.teacher
            try:
                await listener.start(sock or listeners.bind(section.listen)[0], owned=sock is None)
            except OSError as exc:
                return f"cannot listen on {section.listen}: {exc}"
            self.frontends.append(listener)
            log.info("%s listening on %s", name, listener.address)
        return None

    async def _listen(self, factory: Callable[[], Any]) -> asyncio.Server:
        self.factory = factory   # replaced on reload: greeting name, size limit, idle timeout

        def tracked() -> Any:
            session = self.factory()
            self.sessions.add(session)
            return session

        loop = asyncio.get_running_loop()
        if self.sock is not None:
            server = await loop.create_server(tracked, sock=self.sock)
        else:
            host, port = split_hostport(self.config.listen)
            try:
                server = await loop.create_server(tracked, host, port, reuse_address=True,
                                                  backlog=1024)
            except OSError as exc:
                raise listeners.taken(exc, host, port) from None
        self.address = ", ".join(format_address(s.getsockname()) for s in server.sockets)
        return server

    async def _drain(self, server: asyncio.Server) -> None:
        """Stop accepting; close idle sessions at once and busy ones when their transaction
        ends, or at timeouts.shutdown, always with a 421 (never a silent drop)."""
        server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeouts.shutdown
        others = asyncio.gather(*(f.stop(deadline) for f in self.frontends))
        # Only the transactions open now may finish: a session is closed as soon as it has no
        # transaction, or has moved on to a new one (aiosmtpd makes a new envelope per
        # transaction), so a pipelining client cannot keep us up with more mail.
        busy = self._transactions()
        for session in [s for s in self.sessions if s not in busy]:
            close_421(session)
        log.info("stopped accepting; %d session(s) in a transaction", len(busy))
        if self.relay is not None:   # idle next-hop connections serve nobody now: QUIT them
            await self.relay.stop()
        while busy and loop.time() < deadline and not self.forced.is_set():
            await asyncio.sleep(0.05)
            for session, envelope in list(busy.items()):
                if session.envelope is not envelope or not in_transaction(session):
                    close_421(session)
                if not is_open(session):
                    del busy[session]
        for session in busy:
            log.warning("shutdown: closing a session still in a transaction with 421")
            close_421(session)
        await others
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
            self.forced.set()
            return
        self.notifier.stopping()
        log.info("stopping (up to %gs for transactions in flight)", self.config.timeouts.shutdown)
        self.gate.close()   # a client accepted from here on is refused, not greeted
        self.stopping.set()

    def _on_hup(self) -> None:
        if self.handler is None:
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
            assert self.handler is not None   # reload() runs only once serving
            hostname = await greeting(config)   # in a thread (DNS), before anything changes
            if self.learning is not None:     # the lessons made on this model move it too
                await self.learning.attach(scorer)
            batcher = await self._start_batcher(config, scorer)
            old, in_flight = self.batcher, self._transactions()
            self.handler.reconfigure(config, batcher)
            self.gate.reconfigure(config)
            for frontend in self.frontends:
                frontend.reconfigure(config, batcher)
            self.factory = smtp_factory(config, self.handler, self.gate, hostname)
            self.config, self.batcher = config, batcher
            logsetup.set_level(config.log.level)
            self.report(Reloaded(scorer.version, scorer.provider))
            self._task(self._retire(old, in_flight))
            if self.relay is not None:   # a reload starts afresh with the next hop, too
                await self.relay.flush()

    def _transactions(self) -> dict[Any, Any]:
        return {s: s.envelope for s in self.sessions if is_open(s) and in_transaction(s)}

    async def _retire(self, batcher: Any, in_flight: dict[Any, Any]) -> None:
        """Stop the old batcher once the transactions that started on it have finished."""
        try:
            while (any(is_open(s) and s.envelope is env for s, env in in_flight.items())
                   or any(f.uses(batcher) for f in self.frontends)):
                await asyncio.sleep(0.1)
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
