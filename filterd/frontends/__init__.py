"""The front-ends: the SMTP proxy (smtp/), the milter and spamd (listener.py + milter.py,
spamd.py), each an adapter from its protocol onto scan().

Each has the one small shape below, so that the service (service/daemon.py) composes them
without knowing any protocol: it binds their sockets, starts them, hands a reload's config
and batcher to all of them, waits until none still uses an old batcher, and stops them.
Connection ids, admission and the waiting are shared (tracking.py).
"""

from __future__ import annotations

import socket
from typing import Protocol

from filterd.batcher import Batcher
from filterd.config import Config
from filterd.learning import Teacher


class Frontend(Protocol):
    name: str       # "smtp", "milter", "spamd": the log's and the metrics' frontend=
    address: str    # where it listens, once started: "host:port" (", "-joined) or "unix:/path"

    async def start(self, sock: socket.socket, *, owned: bool = True) -> None:
        """Serve on `sock`, bound by the service (or inherited from the supervisor); `owned`:
        we bound it, so a UNIX socket file is ours to remove at stop."""

    def close(self) -> None:
        """Shutting down: a client that connects from now on is refused, not served."""

    async def stop(self, deadline: float) -> None:
        """Stop accepting; let what is being handled finish until the loop-time `deadline`,
        then close the rest (each protocol says so its own way)."""

    def cut(self) -> None:
        """A second stop signal: end what stop() is still waiting for, now."""

    async def reconfigure(self, config: Config, batcher: Batcher) -> None:
        """New config and scorer for new messages; those being handled keep theirs."""

    def uses(self, batcher: Batcher) -> bool:
        """A message being handled still uses `batcher`."""

    async def released(self, batcher: Batcher) -> None:
        """Return once no message uses `batcher` (a reload then stops it)."""


def configured(config: Config, batcher: Batcher, teacher: Teacher | None = None) -> list[tuple[Frontend, str]]:
    """The front-ends the config turns on, each with the address it is to listen on: the
    SMTP proxy always, the milter and spamd when their sections are set. `teacher` is what
    spamd TELL teaches (a filterd.learning.Teacher, or None)."""
    from filterd.frontends import milter, spamd  # only when configured
    from filterd.frontends.listener import Listener
    from filterd.frontends.smtp.frontend import SmtpFrontend

    out: list[tuple[Frontend, str]] = [(SmtpFrontend(config, batcher), config.listen)]
    for name, section, serve in (("milter", config.milter, milter.serve),
                                 ("spamd", config.spamd, spamd.serve)):
        if section is not None:
            listener = Listener(name, serve, config, batcher)
            listener.teacher = teacher
            out.append((listener, section.listen))
    return out
