"""The listener of the milter and spamd front-ends: one asyncio stream server each.

The SMTP proxy is aiosmtpd's protocol (smtp/frontend.py); the other front-ends are plain
stream protocols, so they share this: serve on a bound socket (service/listeners.py binds
it, or the supervisor hands it down), admit (tracking.Admission), keep the State that
reload swaps, count the messages being scanned, and drain on stop. A front-end only
supplies `serve(conn)`, one coroutine per connection, and never sees the socket set-up.
A Listener has the Frontend shape (frontends/__init__.py).

Every connection runs in its own task, and any exception it did not handle is logged
here with a traceback and the connection closed: a client costs itself, never the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from filterd.batcher import Batcher
from filterd.config import Config
from filterd.frontends.tracking import Admission, Changes, new_id
from filterd.hostport import describe
from filterd.learning import Teacher
from filterd.scan import State

log = logging.getLogger(__name__)


@dataclass(eq=False)   # hashed by identity: kept in a set
class Conn:
    """One client connection: its streams, a short id for the log, and its peer."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    id: str
    peer: str
    busy: bool = False            # scanning a message: drain lets it finish
    states: list[State] = field(default_factory=list)


class Listener:
    """A stream server for one front-end (`name` is "milter" or "spamd")."""

    def __init__(self, name: str, serve: Callable[[Listener, Conn], Awaitable[None]],
                 config: Config, batcher: Batcher) -> None:
        self.name, self._serve = name, serve
        self.conns: set[Conn] = set()
        self.server: asyncio.Server | None = None
        self.address = ""
        self.owned = False
        self.admission = Admission(config)
        self.changes = Changes()      # a scan ended, a connection went: drain and reload look
        self._cut = False
        # What spamd TELL teaches: the service sets it (Daemon.teacher) before start(); None
        # means no learning engine, and TELL is refused even with spamd.allow_tell on.
        self.teacher: Teacher | None = None
        self.state = State.build(config, batcher)

    async def reconfigure(self, config: Config, batcher: Batcher) -> None:
        """New config/scorer for new messages; messages being scanned keep theirs."""
        self.state = State.build(config, batcher)
        self.admission.reconfigure(config)

    def uses(self, batcher: Batcher) -> bool:
        """A message being scanned still uses `batcher` (reload waits before stopping it)."""
        return any(s.batcher is batcher for c in self.conns for s in c.states)

    async def released(self, batcher: Batcher) -> None:
        await self.changes.until(lambda: not self.uses(batcher))

    @contextlib.contextmanager
    def scanning(self, conn: Conn) -> Iterator[State]:
        """The State one message is judged with; drain and reload wait while it is in use."""
        state = self.state
        conn.busy = True
        conn.states.append(state)
        try:
            yield state
        finally:
            conn.busy = False
            conn.states.remove(state)
            self.changes.notify()

    async def start(self, sock: socket.socket, *, owned: bool = True) -> None:
        """Serve on `sock`; `owned`: we bound it (a worker's inherited socket is not ours)."""
        self.owned = owned
        if sock.family == socket.AF_UNIX:
            self.server = await asyncio.start_unix_server(self._accept, sock=sock)
        else:
            self.server = await asyncio.start_server(self._accept, sock=sock)
        self.address = describe(sock)

    def close(self) -> None:
        self.admission.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = Conn(reader, writer, new_id(self.name[0]),
                    str(peer[0]) if isinstance(peer, tuple) else "local")
        if self.admission.refusal(peer, len(self.conns), self.name, conn.id) is not None:
            writer.close()
            return
        self.conns.add(conn)
        try:
            await self._serve(self, conn)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.debug("%s %s connection ended: %r", conn.id, self.name, exc)
        except Exception:
            log.exception("%s %s unexpected error; connection closed", conn.id, self.name)
        finally:
            self.conns.discard(conn)
            writer.close()
            self.changes.notify()

    def cut(self) -> None:
        self._cut = True
        self.changes.notify()

    async def stop(self, deadline: float) -> None:
        """Stop accepting; let messages being scanned finish until `deadline` (loop time),
        then close every connection (the MTA retries what was cut: milter_default_action)."""
        if self.server is None:
            return
        self.server.close()
        await self.changes.until(lambda: self._cut or not any(c.busy for c in self.conns), deadline)
        for conn in list(self.conns):
            conn.writer.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), 1.0)
        if self.owned and self.address.startswith("unix:"):
            with contextlib.suppress(OSError):
                os.unlink(self.address[5:])
