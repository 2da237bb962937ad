"""The milter front-end: the Sendmail milter protocol (version 6), as Postfix and Sendmail speak it.

kilter.protocol does the wire format and checks the conversation (which reply may follow
which event); this module reads packets, collects one message, and at end of message
asks scan() for the verdict, then answers:

    ham / tag  rename incoming X-Spam-* headers to X-Spam-Untrusted-* in place, insert ours
               at the top (milter_edits.py: how, without the MTA's hidden headers in the way)
    reject     SMFIR_REPLYCODE 550 5.7.1 (the MTA answers its client at end of DATA)
    trouble    SMFIR_REPLYCODE 451 4.3.0 (scoring failed, on_error: tempfail)

Why kilter.protocol (docs/milter.md): it is sans-IO, so the connection, its limits and its
lifecycle stay ours and asyncio's like every other listener; pymilter wraps libmilter's
threads and a C build, purepythonmilter has had one alpha release.

Bounds: a packet over MAX_PACKET closes the connection (the MTA applies its
milter_default_action); the body is buffered only up to scoring.max_bytes, beyond which
the message is not scored (X-Spam-Status: Skipped) and the rest is read and dropped.
A message whose headers and body together pass max_message_size is refused at once with
552 5.3.4, as the SMTP port refuses it (a permanent error: retrying cannot help, and the
sender gets a bounce that says why); nothing of it is buffered beyond that point.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kilter.protocol import messages as m
from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.core import FilterProtocol
from kilter.protocol.exceptions import UnexpectedMessage, UnknownMessage

from filterd import replies, verdict
from filterd.frontends.listener import Conn, Listener
from filterd.frontends.milter_edits import edits
from filterd.scan import Outcome, Record, State, outcome, scan

log = logging.getLogger(__name__)

MAX_PACKET = (1 << 20) + 1024      # MTAs send body chunks of 64 KiB (at most 1 MiB with MDS_1M)
_LENGTH = struct.Struct("!L")
_WANT_ACTIONS = m.ActionFlags.ADD_HEADERS | m.ActionFlags.CHANGE_HEADERS
# Events we do not need (HELO, unknown commands, DATA), and header values with their
# leading space, so the message we rebuild reads as it arrived.
_WANT_PROTOCOL = (m.ProtocolFlags.NO_HELO | m.ProtocolFlags.NO_UNKNOWN | m.ProtocolFlags.NO_DATA
                  | m.ProtocolFlags.HEADER_LEADING_SPACE)


# What kilter.protocol raises on a packet it cannot decode or does not expect now.
_BAD_PACKET = (UnexpectedMessage, UnknownMessage, ValueError, struct.error, AssertionError,
               UnicodeDecodeError, KeyError, IndexError)


class MilterError(Exception):
    """The MTA sent something we cannot go on from: the connection is closed."""


@dataclass
class Message:
    """One message as the MTA hands it over."""

    mail_from: str = ""
    rcpts: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    size: int = 0
    oversized: bool = False       # over scoring.max_bytes: relayed unscored
    refused: bool = False         # over max_message_size: 552 sent, the rest ignored
    queue_id: str = ""

    def raw(self) -> bytes:
        """The message as the proxy would see it: header lines, empty line, body (CRLF)."""
        lines = [name.encode("ascii", "replace") + b":" + value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                 + b"\r\n" for name, value in self.headers]
        return b"".join(lines) + b"\r\n" + bytes(self.body)


class Session:
    """One milter connection: many SMTP sessions' messages may pass over it, one at a time."""

    def __init__(self, listener: Listener, conn: Conn) -> None:
        self.listener, self.conn = listener, conn
        self.proto = FilterProtocol()
        self.client = conn.peer
        self.leading_space = False
        self.message = Message()

    async def run(self) -> None:
        timeout = self.listener.state.config.timeouts.idle
        while True:
            async with asyncio.timeout(timeout):    # per packet: no task each, unlike wait_for
                packet = await self._packet()
            if packet is None:
                return
            buf = SimpleBuffer(len(packet))
            buf[:] = packet
            events = self.proto.read_from(buf)   # decodes lazily: one event per next()
            while (event := self._decode(events)) is not None:
                # Handled outside _decode's try: an error of filterd's own here (scan, the
                # answers) is not the MTA's packet, and goes up with its traceback.
                if await self._handle(event) is False:
                    return

    @staticmethod
    def _decode(events: Iterator[Any]) -> Any:
        """The next event of a packet (None when it holds no more); MilterError when kilter
        cannot decode it or it may not come now (the conversation's order)."""
        try:
            return next(events, None)
        except _BAD_PACKET as exc:
            raise MilterError(f"malformed or unexpected packet: {exc!r}") from None

    async def _packet(self) -> bytes | None:
        """One length-prefixed packet (None at a clean end of stream), bounded."""
        try:
            head = await self.conn.reader.readexactly(_LENGTH.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise MilterError("truncated packet length") from None
            return None
        (length,) = _LENGTH.unpack(head)
        if length == 0 or length > MAX_PACKET:
            raise MilterError(f"packet of {length} bytes (limit {MAX_PACKET})")
        try:
            return head + await self.conn.reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise MilterError("truncated packet") from None

    def _send(self, *answers: Any) -> None:
        for answer in answers:
            buf = SimpleBuffer(MAX_PACKET)
            self.proto.write_to(buf, answer)
            self.conn.writer.write(buf[:].tobytes())

    async def _handle(self, event: Any) -> bool:
        """React to one event; False ends the connection."""
        msg = self.message
        match event:
            case m.Negotiate():
                self._negotiate(event)
            case m.Macro():
                queue_id = event.macros.get("i")
                if queue_id:
                    msg.queue_id = queue_id
            case m.Connect():
                self.client = str(event.address) if event.address is not None else event.hostname
                self._send(m.Continue())
            case m.EnvelopeFrom():
                self.message = Message(mail_from=bytes(event.sender).decode("utf-8", "replace").strip("<>"),
                                       queue_id=msg.queue_id)
                self._send(m.Continue())
            case m.EnvelopeRecipient():
                msg.rcpts += 1
                self._send(m.Continue())
            case m.Header():
                self._header(event.name, bytes(event.value))
                self._send(self._too_big() or m.Continue())
            case m.Body():
                self._body(bytes(event.content))
                self._send(self._too_big() or m.Continue())
            case m.EndOfMessage():
                self._body(bytes(event.content))
                if (refusal := self._too_big()) is not None:
                    self._send(refusal)
                    self.message = Message()
                else:
                    await self._end_of_message()
            case m.Abort():
                self.message = Message()
            case m.Close():
                return False
            case _:   # EndOfHeaders, and events we asked not to get but an MTA sent anyway
                if self.proto.needs_response(event):
                    self._send(m.Continue())
        return True

    def _negotiate(self, offer: m.Negotiate) -> None:
        actions = offer.action_flags & _WANT_ACTIONS
        if actions != _WANT_ACTIONS:
            raise MilterError("the MTA does not let a milter add and change headers")
        protocol = offer.protocol_flags & _WANT_PROTOCOL
        self.leading_space = bool(protocol & m.ProtocolFlags.HEADER_LEADING_SPACE)
        self._send(m.Negotiate(min(int(offer.version), 6), actions, protocol))

    def _header(self, name: str, value: bytes) -> None:
        msg = self.message
        if not self.leading_space:
            value = b" " + value
        msg.size += len(name) + len(value) + 3
        if not msg.refused:
            msg.headers.append((name, value))

    def _body(self, chunk: bytes) -> None:
        msg = self.message
        msg.size += len(chunk)
        if msg.oversized or msg.refused:
            return
        msg.body += chunk
        if msg.size > self.listener.state.config.scoring.max_bytes:
            msg.oversized = True      # not scored: stop buffering, keep only the headers
            msg.body = bytearray()

    def _too_big(self) -> m.ReplyCode | None:
        """552 5.3.4 once the message passes max_message_size (once logged, then repeated
        to an MTA that sends more of it anyway); its headers and body are dropped."""
        msg, limit = self.message, self.listener.state.config.max_message_size
        if msg.size <= limit:
            return None
        if not msg.refused:
            msg.refused, msg.oversized = True, True
            msg.headers, msg.body = [], bytearray()
            record = Record("milter", self.conn.id, self.client, msg.mail_from, msg.rcpts, msg.size)
            record.queue_id, record.action = msg.queue_id, "too_big"
            record.log(replies.S552_MESSAGE_TOO_BIG)
        return _reply(replies.S552_MESSAGE_TOO_BIG)

    async def _end_of_message(self) -> None:
        msg, self.message = self.message, Message()
        record = Record("milter", self.conn.id, self.client, msg.mail_from, msg.rcpts, msg.size)
        record.queue_id = msg.queue_id
        with self.listener.scanning(self.conn) as state:
            answers = await self._verdict(state, msg, record)
        self._send(*answers)
        await self.conn.writer.drain()

    async def _verdict(self, state: State, msg: Message, record: Record) -> list[Any]:
        """The answers to end of message: header edits then Continue, or a reply code."""
        if msg.oversized:   # its body was not kept: passed on unscored
            done: Outcome = outcome(state, verdict.Verdict("Skipped"), record)
        else:
            done = await scan(state, msg.raw(), record, explain=state.config.policy.report)
        if done.refusal is not None or done.edits is None:
            refusal = done.refusal or replies.S451_SCORING_FAILED
            record.log(refusal)
            return [_reply(refusal)]
        record.log("continue")
        return [*edits(msg.headers, done.edits, self.leading_space), m.Continue()]


def _reply(reply: replies.Reply) -> m.ReplyCode:
    """SMFIR_REPLYCODE: "550 5.7.1 text", NUL-terminated; '%' is libmilter's escape."""
    return m.ReplyCode(str(reply).replace("%", "%%").encode("ascii") + b"\0")


async def serve(listener: Listener, conn: Conn) -> None:
    """One milter connection, from negotiation to close."""
    try:
        await Session(listener, conn).run()
    except MilterError as exc:
        log.warning("%s milter %s protocol error, closing: %s", conn.id, conn.peer, exc)
