"""The next-hop connection pool: idle connections kept for reuse, and QUIT on time.

A connection goes back to the pool when its transaction ends well, and is reused by the
next transaction (LIFO, so the busiest ones stay warm). An idle connection holds one of the
next hop's processes: Postfix's re-injection smtpd is a fixed set of `maxproc` processes,
and one that waits on us serves nobody else (issue 13: ten idle connections starved a
second filter for the 300 s of Postfix's `smtpd_timeout`). So a background reaper says
QUIT (RFC 5321 section 4.1.1.10) to every connection idle for `relay.idle_timeout`, as
Postfix's own client does after `smtp_connection_cache_time_limit` (2 s), and the pool
keeps at most `relay.pool_size` of them. `flush()` QUITs the idle ones now (reload);
`stop()` does the same and keeps none from then on (drain, shutdown).

The gauges `NEXT_HOP_OPEN` and `NEXT_HOP_IDLE` count connections (livesum over workers).
The pool owns every connection it opened until `discard`/`release` hands it back, so each
is counted open exactly from its greeting to its close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiosmtplib

from filterd import metrics

log = logging.getLogger(__name__)

_QUIT_TIMEOUT = 5.0   # seconds we wait for the 221; a next hop slower than that is cut off


class Pool:
    """Idle connections made by `connect`, at most `size`, each QUIT after `idle_timeout`."""

    def __init__(self, connect: Callable[[], Awaitable[aiosmtplib.SMTP]], size: int,
                 idle_timeout: float) -> None:
        self.connect, self.size, self.idle_timeout = connect, size, idle_timeout
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []   # oldest first
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self._quitting: set[asyncio.Task[None]] = set()
        self._keeping = True

    async def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="pool-reaper")

    async def stop(self) -> None:
        """QUIT every idle connection and keep no more: one released from now on is QUIT."""
        self._keeping = False
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await self.flush()
        await asyncio.gather(*self._quitting, return_exceptions=True)

    async def flush(self) -> None:
        """QUIT the idle connections now; the next transaction connects afresh."""
        await asyncio.gather(*(self._quit(smtp) for smtp in self._take(len(self._idle))))

    async def checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """(connection, reused): an idle one if there is one still open, else a new one."""
        while self._idle:
            since, smtp = self._idle.pop()
            metrics.NEXT_HOP_IDLE.dec()
            if smtp.is_connected and time.monotonic() - since < self.idle_timeout:
                return smtp, True
            self._close(smtp)   # the next hop hung up, or the reaper has not got to it yet
        smtp = await self.connect()
        metrics.NEXT_HOP_OPEN.inc()
        return smtp, False

    def release(self, smtp: aiosmtplib.SMTP) -> None:
        """A connection whose transaction ended well: keep it if there is room, else QUIT it."""
        if smtp.is_connected and self._keeping and len(self._idle) < self.size:
            self._idle.append((time.monotonic(), smtp))
            metrics.NEXT_HOP_IDLE.inc()
            if len(self._idle) == 1:
                # A new oldest connection, so a new deadline; a later one joins behind the
                # oldest and changes nothing, so the reaper need not wake for every message.
                self._changed.set()
        else:
            self._close(smtp)

    def discard(self, smtp: aiosmtplib.SMTP) -> None:
        """Drop a connection without ceremony (failure, client vanished mid-transaction)."""
        smtp.close()
        metrics.NEXT_HOP_OPEN.dec()

    # Internals.

    def _take(self, count: int) -> list[aiosmtplib.SMTP]:
        """Remove the `count` oldest idle connections, so that no transaction can take them."""
        taken, self._idle = self._idle[:count], self._idle[count:]
        metrics.NEXT_HOP_IDLE.dec(len(taken))
        return [smtp for _, smtp in taken]

    async def _reap(self) -> None:
        """Sleep until the oldest idle connection is due, QUIT the due ones, repeat."""
        while True:
            now = time.monotonic()
            due = sum(1 for since, _ in self._idle if now - since >= self.idle_timeout)
            for smtp in self._take(due):   # the list is oldest first, so the due ones lead
                self._close(smtp)
            self._changed.clear()
            wait = self._idle[0][0] + self.idle_timeout - now if self._idle else None
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait()   # a release may start a new countdown
            except TimeoutError:
                pass

    def _close(self, smtp: aiosmtplib.SMTP) -> None:
        """QUIT in the background if the connection is still up; else just count it closed."""
        if not smtp.is_connected:
            self.discard(smtp)
            return
        task = asyncio.get_running_loop().create_task(self._quit(smtp))
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.quit(timeout=_QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.debug("QUIT to the next hop failed (closing anyway): %s", exc)
        finally:
            self.discard(smtp)
