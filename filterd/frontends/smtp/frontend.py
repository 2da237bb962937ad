"""The SMTP proxy as a front-end (the Frontend shape, frontends/__init__.py): its parts
(Gate, Relay, FilterHandler, the aiosmtpd protocol factory), its sessions, reload and drain.

Drain (RFC 5321 3.8: a server that must shut down answers 421 and closes): stop accepting;
close idle sessions at once and busy ones when their transaction ends, or at the deadline,
always with a 421, never a silent drop. Only the transactions open when the drain starts
may finish: a session is closed as soon as it has no transaction, or has moved on to a new
one (aiosmtpd makes a new envelope per transaction), so a pipelining client cannot keep
us up with more mail. It waits on the Gate's Changes, notified at every reply we send and
every connection lost, never on a timer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from typing import Any

from filterd import replies
from filterd.batcher import Batcher
from filterd.config import Config
from filterd.frontends.smtp.gate import Gate
from filterd.frontends.smtp.handler import FilterHandler
from filterd.frontends.smtp.relay import Relay
from filterd.frontends.smtp.smtpd import FilterSMTP, greeting, smtp_factory
from filterd.hostport import describe

log = logging.getLogger(__name__)

_SHUTDOWN_LINE = replies.S421_SHUTTING_DOWN.line()


def in_transaction(session: FilterSMTP) -> bool:
    """A session between MAIL FROM and the reply to its final dot (aiosmtpd resets the envelope then)."""
    return session.envelope is not None and session.envelope.mail_from is not None


def is_open(session: FilterSMTP) -> bool:
    return session.transport is not None and not session.transport.is_closing()


def close_421(session: FilterSMTP) -> None:
    """RFC 5321 section 3.8: a server that must shut down answers 421 and closes."""
    transport: Any = session.transport
    if is_open(session):
        transport.write(_SHUTDOWN_LINE)
        transport.close()


class SmtpFrontend:
    """The SMTP proxy of one worker."""

    name = "smtp"

    def __init__(self, config: Config, batcher: Batcher) -> None:
        self.config, self.batcher = config, batcher
        self.gate = Gate(config)
        self.sessions: weakref.WeakSet[FilterSMTP] = weakref.WeakSet()
        self.handler: FilterHandler | None = None
        self.relay: Relay | None = None
        self.server: asyncio.Server | None = None
        self.address = ""
        self._cut = False

    async def start(self, sock: socket.socket, *, owned: bool = True) -> None:
        hostname = await greeting(self.config)
        self.relay = Relay(self.config, hostname)   # connects on demand
        await self.relay.start()   # the pool's idle reaper; stop() QUITs the pooled connections
        self.handler = FilterHandler(self.config, self.batcher, self.relay)
        self._factory = smtp_factory(self.config, self.handler, self.gate, hostname)

        def tracked() -> FilterSMTP:
            session = self._factory()
            self.sessions.add(session)
            return session

        self.server = await asyncio.get_running_loop().create_server(tracked, sock=sock)
        self.address = describe(sock)

    def close(self) -> None:
        self.gate.close()

    async def reconfigure(self, config: Config, batcher: Batcher) -> None:
        assert self.handler is not None and self.relay is not None   # only once started
        hostname = await greeting(config)   # in a thread (DNS), before anything changes
        self.handler.reconfigure(config, batcher)
        self.gate.reconfigure(config)
        self._factory = smtp_factory(config, self.handler, self.gate, hostname)
        self.config, self.batcher = config, batcher
        await self.relay.flush()   # a reload starts afresh with the next hop, too

    def uses(self, batcher: Batcher) -> bool:
        """A transaction (its State from MAIL on, smtpd.FilterSession) still uses `batcher`."""
        states = (getattr(s.session, "state", None) for s in self.sessions)
        return any(state is not None and state.batcher is batcher for state in states)

    async def released(self, batcher: Batcher) -> None:
        await self.gate.changes.until(lambda: not self.uses(batcher))

    def cut(self) -> None:
        self._cut = True
        self.gate.changes.notify()

    async def stop(self, deadline: float) -> None:
        if self.server is None:
            return
        self.server.close()
        busy = {s: s.envelope for s in self.sessions if is_open(s) and in_transaction(s)}
        for session in [s for s in self.sessions if s not in busy]:
            close_421(session)
        log.info("stopped accepting; %d session(s) in a transaction", len(busy))
        if self.relay is not None:   # idle next-hop connections serve nobody now: QUIT them
            await self.relay.stop()

        def finished() -> bool:
            for session, envelope in list(busy.items()):
                if session.envelope is not envelope or not in_transaction(session):
                    close_421(session)
                if not is_open(session):
                    del busy[session]
            return self._cut or not busy

        await self.gate.changes.until(finished, deadline)
        for session in busy:
            log.warning("shutdown: closing a session still in a transaction with 421")
            close_421(session)
