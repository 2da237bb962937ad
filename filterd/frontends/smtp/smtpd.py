"""The aiosmtpd `SMTP` protocol, adjusted to what Postfix expects of a content filter.

aiosmtpd owns the protocol; this subclass only fills the gaps below, each small. Where
aiosmtpd has no hook for what we need, we override its method and say so ("aiosmtpd has
no hook"): `_create_session`, `_handle_client` (before the greeting), `connection_lost`,
`_timeout_cb` and `_getaddr` are aiosmtpd internals, as are the stream reader's buffer
(`_next_command_waiting`) and the steps smtp_DATA is rebuilt on: aiosmtpd is pinned
exactly in pyproject.toml, tests/test_pins.py fails when a name we use is gone or
aiosmtpd's smtp_DATA changed, and the end-to-end tests cover the behaviour. The handler sees only aiosmtpd hooks;
connection-level rules live in gate.py, which this class calls.

* XFORWARD (Postfix XFORWARD_README) is a command aiosmtpd does not know;
* DSN parameters (RFC 3461: RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT) would be refused
  with 555, so we take them off the command line, keep them verbatim, and let the
  handler pass them on;
* the access check and connection limit happen before the greeting (RFC 5321 3.1: 554);
* the idle timeout says 421 before closing (RFC 5321 4.2: 421 closes the channel);
* `<path>` arguments are taken literally (RFC 5321 4.1.2) instead of through the email
  package's RFC 5322 parser, which reads `(` as the start of a comment and turned
  `<x(y@example.org>` into `x`; it is also a tenth of the cost per command.

Lines up to 1 MiB are accepted (RFC 5321 4.5.3.1.6 says 1000 octets, Postfix keeps to
that, but hostile or sloppy senders do not, and rejecting would bounce their mail).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Callable
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, Session, syntax

from filterd import replies
from filterd.config import Config
from filterd.frontends.smtp.data import Outcome, read_data
from filterd.frontends.smtp.gate import Gate
from filterd.hostport import greeting_name
from filterd.scan import Record

log = logging.getLogger(__name__)

_MAIL_EXTRA = frozenset({"RET", "ENVID"})
_RCPT_EXTRA = frozenset({"NOTIFY", "ORCPT"})
# RFC 5321 4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">"; the source route is dropped (C.2).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CLOSING = frozenset({221, 421, 502})   # aiosmtpd closes the connection after these (see push)
_PATH = re.compile(r"\s*<(?:@[^<>:]*:)?([^<>]*)>(.*)\Z", re.DOTALL)


class FilterSession(Session):
    """aiosmtpd's Session plus what one filterd connection needs to remember."""

    def __init__(self, loop: Any) -> None:
        super().__init__(loop)
        self.id = ""
        self.admitted = False
        self.address: Any = None      # the peer's IP address (Gate.admit), None if not IP
        self.xforward: dict[str, str] = {}
        self.client = ""              # the original client (XFORWARD ADDR) or our peer
        self.txn: Any = None          # relay.Transaction while a mail transaction is open
        self.state: Any = None        # handler state (config, batcher, policy) of that transaction

    def end_transaction(self) -> Any:
        """Forget the open transaction and return its relay.Transaction (None if there was none)."""
        txn, self.txn, self.state = self.txn, None, None
        return txn


class FilterSMTP(SMTP):
    line_length_limit = 1 << 20
    command_size_limit = 2048     # RFC 3461 parameters make RCPT lines longer than 512

    def __init__(self, handler: Any, gate: Gate, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.gate = gate              # the hooks reach it as server.gate
        # aiosmtpd keeps this dict on the class; give each connection its own.
        self.command_size_limits = collections.defaultdict(lambda: FilterSMTP.command_size_limit)
        self.extra_params: list[str] = []
        self.last_code = 0            # code of the last reply sent (see push)
        self._held: list[bytes] = []  # replies to pipelined commands not sent yet (see push)

    def _create_session(self) -> Session:
        """aiosmtpd has no hook: the factory method it documents for a Session subclass."""
        return FilterSession(self.loop)

    async def _handle_client(self) -> None:
        """aiosmtpd has no hook before the greeting: refuse here (RFC 5321 3.1) or go on."""
        refusal = self.gate.admit(self.session)
        if refusal:
            await self.push(str(refusal))
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        """aiosmtpd has no hook: the client vanished, so drop (never reuse) its next-hop connection."""
        super().connection_lost(error)
        session: Any = self.session
        self.gate.release(session)
        txn = session.end_transaction()
        if txn is not None:
            txn.close()

    def _timeout_cb(self) -> None:
        """aiosmtpd has no hook and closes silently; RFC 5321 4.2 wants a 421 first."""
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(b"".join(self._held) + replies.S421_IDLE_TIMEOUT.line())
            self._held.clear()
        super()._timeout_cb()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _PATH.match(arg) if arg else None
        if match is None:
            return super()._getaddr(arg)   # no angle brackets: aiosmtpd's lenient parse
        address = match.group(1)
        if _CONTROL.search(address):
            return None, None              # 553: no control characters (RFC 5321 4.1.2)
        # aiosmtpd spells the null reverse-path "<>"; keep that so the hooks see the same.
        return address or "<>", match.group(2)

    async def push(self, status: AnyStr) -> None:
        """aiosmtpd's public send, with two additions.

        We note each reply's code, because some refusals are aiosmtpd's own (552 over SIZE,
        500 line too long) and we log and count those too.

        Replies to pipelined commands go out together (RFC 2920 4: the server should not
        flush them until it would otherwise wait for input): while a whole next command
        is already in the input buffer, a reply is held; the next reply that finds none
        there takes the held ones along in one write. A client that pipelines MAIL, RCPT
        and DATA (Postfix does) then gets one segment instead of three, and on loopback
        every send also pays for the receiver's side. Replies that end the session (221,
        421, aiosmtpd's 502 goodbye) are never held: aiosmtpd closes right after them.
        """
        self.gate.changes.notify()    # a reply: a transaction may have ended, the drain looks
        head = status[:3]
        self.last_code = int(head) if head.isdigit() else 0
        line = (status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
                if isinstance(status, str) else status) + b"\r\n"
        if self.last_code not in _CLOSING and self._next_command_waiting():
            self._held.append(line)
            return
        if self._held:
            self._held.append(line)
            line = b"".join(self._held)
            self._held.clear()
        self._writer.write(line)
        await self._writer.drain()

    def _next_command_waiting(self) -> bool:
        # aiosmtpd's own StreamReader; it reaches into the same private buffer (_handle_client)
        return b"\n" in self._reader._buffer  # type: ignore[attr-defined]

    async def smtp_MAIL(self, arg: str | None) -> None:
        arg, self.extra_params = _take_params(arg, _MAIL_EXTRA)
        await super().smtp_MAIL(arg)
        declared = re.search(r"\sSIZE=(\d+)", arg or "", re.IGNORECASE)
        if (declared and int(declared.group(1)) > (self.data_size_limit or 0)
                and self.last_code == replies.S552_SIZE_DECLARED.code):   # RFC 1870 6.1
            sender = self._getaddr((arg or "").partition(":")[2])[0]
            _too_big(self.session, sender, 0, int(declared.group(1)), replies.S552_SIZE_DECLARED)

    async def smtp_RCPT(self, arg: str | None) -> None:
        arg, self.extra_params = _take_params(arg, _RCPT_EXTRA)
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str | None) -> None:
        """aiosmtpd's DATA, with the text read by data.read_data (one buffer, large reads)
        instead of a line at a time into a list of lines; the checks, replies and the
        handle_DATA hook are aiosmtpd's own, in its order."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        except asyncio.IncompleteReadError:
            log.info("Connection lost during DATA")
            self._writer.close()
            return
        if data.outcome is not Outcome.OK:
            await self._refuse_data(envelope, data.outcome)
            return
        # A bytearray, not bytes: bytes-like for everything downstream, and a bytes copy would
        # hold the message twice at its largest moment.
        envelope.content = envelope.original_content = data.content  # type: ignore[assignment]
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _refuse_data(self, envelope: Any, outcome: Outcome) -> None:
        """Too much data or a line too long (answered after the final dot, RFC 5321 4.2.5):
        aiosmtpd's replies, and our next-hop transaction is RSET too."""
        too_much = outcome is Outcome.TOO_MUCH
        await self.push(str(replies.S552_TOO_MUCH_DATA if too_much else replies.S500_LINE_TOO_LONG))
        self._set_post_data_state()
        session: Any = self.session
        if session.txn is not None:
            if too_much:    # counted up to the limit: the size logged is the limit
                _too_big(session, envelope.mail_from, len(envelope.rcpt_tos),
                         self.data_size_limit or 0, replies.S552_TOO_MUCH_DATA)
            await session.end_transaction().abort()

    @syntax("XFORWARD attribute=value ...")
    async def smtp_XFORWARD(self, arg: str | None) -> None:
        """A command aiosmtpd does not know: an smtp_* method is its documented extension point."""
        await self.push(str(self.gate.xforward(self.session, self.envelope, arg or "")))


def _too_big(session: Any, sender: str | None, rcpts: int, size: int, reply: replies.Reply) -> None:
    """The one message line and count (scan.Record) for a message over max_message_size."""
    client = session.client or session.xforward.get("ADDR") or (session.peer or ["-"])[0]
    record = Record("smtp", session.id, client, sender, rcpts, size)
    record.action = "too_big"
    record.log(reply)


def _take_params(arg: str | None, names: frozenset[str]) -> tuple[str | None, list[str]]:
    """Split `names` parameters off a MAIL/RCPT argument, keeping their exact spelling."""
    if not arg:
        return arg, []
    close = arg.rfind(">")
    head, tail = (arg[: close + 1], arg[close + 1:]) if close >= 0 else (arg, "")
    kept: list[str] = []
    taken: list[str] = []
    for word in tail.split():
        (taken if word.partition("=")[0].upper() in names else kept).append(word)
    return " ".join([head, *kept]), taken


async def greeting(config: Config) -> str:
    """Our greeting name (hostport.greeting_name), looked up in a thread: with `hostname:
    null` it asks socket.getfqdn, which may wait on DNS, and the loop must not."""
    return await asyncio.get_running_loop().run_in_executor(None, greeting_name, config)


def smtp_factory(config: Config, handler: Any, gate: Gate, hostname: str) -> Callable[[], FilterSMTP]:
    """The protocol factory the daemon passes to `loop.create_server`; `hostname` is what
    greeting() found."""

    def factory() -> FilterSMTP:
        return FilterSMTP(
            handler,
            gate,
            data_size_limit=int(config.max_message_size),
            enable_SMTPUTF8=True,        # advertised with 8BITMIME (RFC 6531)
            decode_data=False,           # bytes untouched; also makes aiosmtpd offer 8BITMIME
            hostname=hostname,
            ident="filterd",
            timeout=float(config.timeouts.idle),
        )

    return factory
