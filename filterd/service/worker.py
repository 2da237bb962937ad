"""One worker process of a supervisor (`workers` > 1): the Daemon on an inherited socket.

The supervisor (service/supervisor.py) starts `filterd serve --worker I --listen-fd FD
--channel-fd FD`; cli.py calls run_worker(). The Daemon's reports (service/reports.py)
go up the channel, one line each. A worker whose supervisor has gone (the channel reads
EOF) stops as if it got SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from filterd.config import Config
from filterd.service import eventloop
from filterd.service.daemon import Daemon
from filterd.service.reports import Report, encode

log = logging.getLogger(__name__)


def run_worker(config_path: str, config: Config, listen_fd: int, channel_fd: int,
               frontend_fds: dict[str, int] | None = None) -> int:
    """One worker: the Daemon on the inherited socket, reporting over the channel."""
    # Until the Daemon installs its handlers, a SIGTERM (the supervisor stopping while we
    # load the model) ends this worker quietly: it has no sessions yet.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
    sock = socket.socket(fileno=listen_fd)
    channel = socket.socket(fileno=channel_fd)
    frontends = {name: socket.socket(fileno=fd) for name, fd in (frontend_fds or {}).items()}
    return eventloop.run(_worker_main(config_path, config, sock, channel, frontends),
                         config.event_loop)


async def _worker_main(config_path: str, config: Config, sock: socket.socket,
                       channel: socket.socket, frontends: dict[str, socket.socket]) -> int:
    reader, writer = await asyncio.open_connection(sock=channel)

    def report(event: Report) -> None:
        log.debug("reporting %r", event)
        writer.write(encode(event))

    daemon = Daemon(config_path, config, sock=sock, report=report, frontend_socks=frontends)

    async def watch_supervisor() -> None:
        await reader.read()   # returns at EOF: the supervisor is gone
        log.warning("supervisor gone; stopping")
        daemon.stop()

    watcher = asyncio.get_running_loop().create_task(watch_supervisor())
    try:
        return await daemon.amain()
    finally:
        watcher.cancel()
        writer.close()
