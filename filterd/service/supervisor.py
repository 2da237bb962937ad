"""`workers: N > 1`: a supervisor process and N worker processes, one listening socket each.

The supervisor binds the listening sockets (service/listeners.bind: for each TCP address
one per worker, all on that address with SO_REUSEPORT, so the kernel spreads connections
evenly over the workers; one shared socket for a UNIX path) and starts each worker as
`python -m filterd serve --worker I --listen-fd FD --channel-fd FD [--milter-fd FD]
[--spamd-fd FD]`. It keeps every socket open, so connections that arrive for a worker
being replaced wait in its queue. Each worker runs the ordinary Daemon (service/daemon.py) on the inherited socket and
loads its own copy of the model (service/worker.py).

The supervisor is the only process systemd hears from (NotifyAccess=main): workers report
over a socketpair, one typed report per line (service/reports.py: Ready, Reloaded,
Refused, Failed), and the supervisor logs each outcome once and sends READY/RELOADING/STOPPING. Signals reach the
workers through it: SIGHUP and SIGTERM are forwarded. It also serves the metrics, summed
over the workers with prometheus-client's multiprocess mode (a directory of mmap files
named by PROMETHEUS_MULTIPROC_DIR, set only for the workers). A worker whose supervisor
has gone (its channel reads EOF) stops as if it got SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess

from filterd.config import Config, load_config
from filterd.errors import ConfigError
from filterd.hostport import describe, format_address
from filterd import metrics
from filterd.service import eventloop, listeners
from filterd.service.notify import Notifier
from filterd.service.reload import pin_restart_keys, refused, reloaded
from filterd.service.reports import Failed, Ready, Reloaded, Report, decode

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 300.0   # seconds a worker may take to load and warm up the model


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter   # unused, but it holds our end of the channel open
    ready: bool = False            # reported ready; only ready workers are asked to reload
    events: asyncio.Queue[Report | None] = field(default_factory=asyncio.Queue)

    async def pump(self) -> None:
        """Channel lines → reports; EOF (the worker exited) → None."""
        while line := await self.reader.readline():
            await self.events.put(decode(line))
        await self.events.put(None)


class Supervisor:
    def __init__(self, config_path: str, config: Config) -> None:
        self.config_path, self.config = config_path, config
        self.notifier = Notifier()
        self.workers: list[Worker] = []
        self.stopping = False
        self.done = asyncio.Event()
        self.reload_lock = asyncio.Lock()
        # "smtp", "milter", "spamd" -> listening sockets; worker I uses entry (I-1) % len
        self.socks: dict[str, list[socket.socket]] = {}
        self.metrics_dir = ""    # the workers' prometheus files: made once the sockets are bound
        self._tasks: set[asyncio.Task[None]] = set()

    async def amain(self) -> int:
        try:
            if not self._bind(self.config.worker_count()):
                return 1
            self.metrics_dir = tempfile.mkdtemp(prefix="filterd-metrics-")
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)
            registry.register(metrics.MODEL)
            registry.register(metrics.RELOADS)
            stop_metrics = metrics.serve(self.config.metrics, registry)
            try:
                return await self._serve()
            finally:
                stop_metrics()
        finally:
            self._close_all()
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _bind(self, count: int) -> bool:
        """Every listening socket, bound here once and inherited by the workers: one per
        worker for each TCP address (SO_REUSEPORT), one shared for a UNIX path."""
        addresses = {"smtp": self.config.listen}
        addresses.update({name: getattr(self.config, name).listen for name in ("milter", "spamd")
                          if getattr(self.config, name) is not None})
        for name, address in addresses.items():
            try:
                self.socks[name] = listeners.bind(address, count)
            except OSError as exc:
                log.error("cannot listen on %s: %s", address, exc)
                return False
            for sock in self.socks[name]:
                sock.set_inheritable(True)
            if name != "smtp":
                log.info("%s listening on %s", name, describe(self.socks[name][0]))
        return True

    def _close_all(self) -> None:
        for name, socks in self.socks.items():
            for sock in socks:
                _close(sock, self.config.listen if name == "smtp" else getattr(self.config, name).listen)
        self.socks = {}

    def _sockets(self, index: int) -> dict[str, socket.socket]:
        """The sockets worker `index` (1..N) listens on."""
        return {name: socks[(index - 1) % len(socks)] for name, socks in self.socks.items()}

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop)
        loop.add_signal_handler(signal.SIGINT, self._stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._task(self._reload()))
        try:
            if not await self._start_all():
                return 1
            await self._supervise()
            codes = await asyncio.gather(*(w.proc.wait() for w in self.workers))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped")
        return 0 if all(code == 0 for code in codes) else 1

    async def _start_all(self) -> bool:
        count = len(self.socks["smtp"])
        self.workers = [await self._spawn(i) for i in range(1, count + 1)]
        results = await asyncio.gather(*(self._expect(w, STARTUP_TIMEOUT) for w in self.workers))
        failed = [r for r in results if not isinstance(r, Ready)]
        if failed and not self.stopping:
            log.error("%s", _why(failed[0]))
            await self._terminate()
            return False
        if self.stopping:   # SIGTERM while starting: no READY, just the ordinary stop
            return True
        for worker in self.workers:
            worker.ready = True
        first = results[0]
        assert isinstance(first, Ready)
        version, provider = first.version, first.provider
        metrics.MODEL.info({"version": version, "provider": provider})
        address = format_address(self.socks["smtp"][0].getsockname())
        log.info("ready: listening on %s, %d workers, model %s on %s, %s event loop", address,
                 count, version, provider, eventloop.name(self.config.event_loop))
        self.notifier.ready(f"listening on {address}, {count} workers, model {version}")
        return True

    async def _supervise(self) -> None:
        """Until stopped: a worker that dies is replaced (its sessions are lost, the rest go on)."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            exits = {loop.create_task(w.proc.wait()): w for w in self.workers}
            stop = loop.create_task(self.done.wait())
            finished, pending = await asyncio.wait([*exits, stop],
                                                   return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in finished & exits.keys():
                if self.stopping:
                    break
                replaced = await self._replace(exits[task])
                if not replaced and not self.stopping:
                    self._stop()

    async def _replace(self, dead: Worker) -> bool:
        log.error("worker %d (pid %d) exited with status %s; starting a new one", dead.index,
                  dead.proc.pid, dead.proc.returncode)
        multiprocess.mark_process_dead(dead.proc.pid, self.metrics_dir)
        worker = await self._spawn(dead.index)
        self.workers[self.workers.index(dead)] = worker
        report = await self._expect(worker, STARTUP_TIMEOUT)
        if not isinstance(report, Ready):
            log.error("cannot replace worker %d: %s", worker.index, _why(report))
            return False
        worker.ready = True
        log.info("worker %d replaced (pid %d)", worker.index, worker.proc.pid)
        return True

    async def _spawn(self, index: int) -> Worker:
        ours, theirs = socket.socketpair()
        socks = self._sockets(index)
        frontends = {name: sock for name, sock in socks.items() if name != "smtp"}
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "filterd", "serve", "-c", self.config_path,
            "--worker", str(index), "--listen-fd", str(socks["smtp"].fileno()),
            "--channel-fd", str(theirs.fileno()),
            *(arg for name, sock in frontends.items() for arg in (f"--{name}-fd", str(sock.fileno()))),
            pass_fds=(theirs.fileno(), *(sock.fileno() for sock in socks.values())),
            env=env, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True)   # Ctrl-C reaches the supervisor only; it passes it on once
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        worker = Worker(index, proc, reader, writer)
        self._task(worker.pump())
        return worker

    def _task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expect(self, worker: Worker, timeout: float) -> Report:
        """The next report from `worker`; Failed if none comes in time or the worker exits."""
        try:
            report = await asyncio.wait_for(worker.events.get(), timeout)
        except TimeoutError:
            return Failed(f"worker {worker.index} did not answer in {timeout:g}s")
        if report is None:
            return Failed(f"worker {worker.index} exited with status {await worker.proc.wait()}")
        return report

    def _stop(self) -> None:
        """Forward the stop to the workers; a second one makes them cut their sessions now."""
        if not self.stopping:
            self.notifier.stopping()
            log.info("stopping %d workers", len(self.workers))
        self.stopping = True
        self.done.set()
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        for worker in self.workers:
            if worker.proc.returncode is None:
                worker.proc.send_signal(sig)

    async def _terminate(self) -> None:
        self._signal(signal.SIGTERM)
        await asyncio.gather(*(w.proc.wait() for w in self.workers))

    async def _reload(self) -> None:
        async with self.reload_lock:   # one at a time: each SIGHUP gets one answer per worker
            await self._reload_once()

    async def _reload_once(self) -> None:
        ready = [w for w in self.workers if w.ready]   # one starting now reads the new config
        if self.stopping or not ready:
            log.warning("SIGHUP ignored: %s", "stopping" if self.stopping else "still starting")
            return
        self.notifier.reloading()
        try:
            config, notes = pin_restart_keys(self.config, load_config(self.config_path))
        except ConfigError as exc:
            refused(self.notifier, str(exc), log)
            return
        for note in notes:
            log.warning("reload: %s", note)
        for worker in ready:
            worker.proc.send_signal(signal.SIGHUP)
        results = await asyncio.gather(*(self._expect(w, STARTUP_TIMEOUT) for w in ready))
        failed = [_why(r) for r in results if not isinstance(r, Reloaded)]
        if failed and len(failed) < len(ready):   # only if a worker ran out of something
            metrics.RELOADS.labels("failed").inc()
            log.error("reload failed in %d of %d workers, the others reloaded (send SIGHUP "
                      "again or restart filterd): %s", len(failed), len(ready), failed[0])
            self.notifier.ready("reload partly failed, see the log")
            return
        if failed:
            refused(self.notifier, failed[0], log)
            return
        self.config = config
        first = results[0]
        assert isinstance(first, Reloaded)
        reloaded(self.notifier, first.version, first.provider, log)


def _close(sock: socket.socket, address: str) -> None:
    """Close a listening socket; one on a UNIX path we bound takes its file with it."""
    was_open = sock.fileno() != -1
    sock.close()
    if address.startswith("unix:") and was_open:
        try:
            os.unlink(address[5:])
        except OSError:
            pass


def _why(report: Report) -> str:
    """What went wrong, for a report that is not the one we waited for."""
    return getattr(report, "why", f"unexpected report {report!r}")
