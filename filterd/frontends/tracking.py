"""What every front-end keeps about its connections, written once: connection ids, admission
(allowed_networks, max_connections, and nobody new once shutting down), and `Changes`,
which drain and reload wait on instead of polling.

A front-end is anything with the `Frontend` shape (frontends/__init__.py); the SMTP proxy
(smtp/frontend.py) and the stream listener of the milter and spamd (listener.py) both build
on this module, so their rules cannot drift apart.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

from filterd.config import Config
from filterd.hostport import in_networks, networks, peer_address

log = logging.getLogger(__name__)
_ids = itertools.count(1)

NOT_ALLOWED, SHUTTING_DOWN, TOO_MANY = "not in allowed_networks", "shutting down", "max_connections reached"


def new_id(kind: str = "") -> str:
    """A short connection id for the log: `<pid hex>.<kind><n hex>` (kind "m" milter, "s" spamd,
    "" for SMTP), unique in the process and told apart between workers by the pid."""
    return f"{os.getpid() % 100000:x}.{kind}{next(_ids):x}"


class Admission:
    """Who may connect now: allowed_networks (for IP peers), max_connections, and no one
    once `close()` was called (SIGTERM)."""

    def __init__(self, config: Config) -> None:
        self.closing = False
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.allowed = networks(config.allowed_networks)
        self.max_connections = config.max_connections

    def close(self) -> None:
        self.closing = True

    def refusal(self, peer: Any, open_now: int, frontend: str, conn_id: str) -> str | None:
        """Why a client (`peer`: its socket peer name, anything not IP for a UNIX socket) may
        not be served, logged as one line; None to serve it. `open_now`: connections open."""
        why = None
        address = peer_address(peer)
        if address is not None or isinstance(peer, tuple):
            if not in_networks(address, self.allowed):
                why = NOT_ALLOWED
        if why is None and self.closing:
            why = SHUTTING_DOWN
        if why is None and open_now >= self.max_connections:
            why = TOO_MANY
        if why is not None:
            shown = peer[0] if isinstance(peer, tuple) else "local"
            log.log(logging.INFO if why == SHUTTING_DOWN else logging.WARNING,
                    "%s %s %s refused: %s", conn_id, frontend, shown, why)
        return why


class Changes:
    """Something the drain or a reload waits for may have changed: `notify()` from anywhere
    on the loop (a message scanned, a transaction ended, a connection gone); `until()`
    waits for a condition, checking it at each notification, never on a timer."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def until(self, done: Callable[[], bool], deadline: float | None = None) -> bool:
        """Wait until done() (True) or the loop-time `deadline` passes (done() then)."""
        loop = asyncio.get_running_loop()
        while not done():
            self._event.clear()
            if deadline is None:
                await self._event.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return done()
            try:
                async with asyncio.timeout(remaining):
                    await self._event.wait()
            except TimeoutError:
                return done()
        return True
