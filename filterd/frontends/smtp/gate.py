"""Who may connect, and whose XFORWARD we believe: the connection-level rules of the proxy.

aiosmtpd has no hook before the greeting, none when a connection is lost and none for a
command it does not know, so smtpd.FilterSMTP calls the Gate from its overrides of those
places (see smtpd.py): `admit` before the greeting, `release` when the connection is lost,
`xforward` for the XFORWARD command. The hooks in handler.py reach it as `server.gate`.

The Gate also counts what is open, which the drain and the tests watch: `sessions`
(admitted connections) and `in_flight` (those inside a mail transaction).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from filterd import metrics, replies
from filterd.config import Config
from filterd.frontends.tracking import NOT_ALLOWED, SHUTTING_DOWN, Admission, Changes, new_id
from filterd.hostport import in_networks, networks, peer_address
from filterd.replies import Reply

log = logging.getLogger(__name__)

XFORWARD_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
_XFORWARD_ITEM = re.compile(r"^([A-Za-z]+)=(\S*)$")
_REFUSALS = {NOT_ALLOWED: replies.S554_ACCESS_DENIED, SHUTTING_DOWN: replies.S421_SHUTTING_DOWN}


def parse_xforward(arg: str) -> dict[str, str] | None:
    """"NAME=x ADDR=y" → {"NAME": "x", "ADDR": "y"}; None on bad syntax or unknown names."""
    items: dict[str, str] = {}
    for word in arg.split():
        match = _XFORWARD_ITEM.match(word)
        if not match or match.group(1).upper() not in XFORWARD_ATTRS:
            return None
        items[match.group(1).upper()] = match.group(2)
    return items or None


class Gate:
    """allowed_networks, max_connections and xforward_networks of one worker."""

    def __init__(self, config: Config) -> None:
        self._open: set[Any] = set()
        self.admission = Admission(config)
        # A reply sent or a connection lost: what the drain and a reload wait on.
        self.changes = Changes()
        self.reconfigure(config)

    @property
    def closing(self) -> bool:
        return self.admission.closing

    def close(self) -> None:
        """Shutting down (SIGTERM): from now on a new client gets one 421 instead of a
        greeting, never a 220 followed at once by the drain's 421 (RFC 5321 3.1, 3.8)."""
        self.admission.close()

    def reconfigure(self, config: Config) -> None:
        """New rules for the next connection and the next XFORWARD; open sessions stay."""
        self.admission.reconfigure(config)
        self.trusted = networks(config.xforward_networks)

    @property
    def sessions(self) -> int:
        return len(self._open)

    @property
    def in_flight(self) -> int:
        return sum(1 for session in self._open if session.txn is not None)

    def admit(self, session: Any) -> Reply | None:
        """None to greet the client, else the reply that refuses it (RFC 5321 3.1: 554;
        421 when it cannot be served now)."""
        session.id = new_id()
        session.address = peer_address(session.peer)   # parsed once, checked again at EHLO/XFORWARD
        why = self.admission.refusal(session.peer, self.sessions, "smtp", session.id)
        if why is not None:
            return _REFUSALS.get(why, replies.S421_TOO_MANY_CONNECTIONS)
        self._open.add(session)
        metrics.IN_FLIGHT.inc()
        return None

    def release(self, session: Any) -> None:
        """The connection is gone; a refused one was never counted."""
        if session in self._open:
            self._open.discard(session)
            metrics.IN_FLIGHT.dec()
        self.changes.notify()

    def trusts(self, session: Any) -> bool:
        """May this client send XFORWARD (and is it offered at EHLO)?"""
        return in_networks(session.address, self.trusted)

    def xforward(self, session: Any, envelope: Any, arg: str) -> Reply:
        """Postfix XFORWARD_README: remember the original client's attributes for one transaction."""
        if not self.trusts(session):
            return replies.S550_XFORWARD_DENIED
        if envelope.mail_from is not None:
            return replies.S503_XFORWARD_IN_TRANSACTION
        items = parse_xforward(arg)
        if items is None:
            return replies.S501_XFORWARD_SYNTAX
        session.xforward.update(items)
        return replies.S250_XFORWARD_OK
