"""Next-hop delivery with aiosmtplib over a small pool of reused connections.

filterd relays like Postfix's own before-queue proxy (SMTPD_PROXY_README): a session
takes a next-hop connection at MAIL FROM and passes MAIL and each RCPT on as it gets
them, so every recipient gets the next hop's own reply (RFC 5321 section 3.3) and the
MTA handles per-recipient results itself. DATA is sent once the verdict is known; the
client gets 250 only after the next hop said 250 to the final dot.

We send DATA content ourselves rather than with aiosmtplib's `data()`: that one rewrites
bare CR and LF to CRLF and dot-stuffs after bare LF too, and we promise byte-identical
relaying of what aiosmtpd received (dot-stuffing is undone by aiosmtpd on CRLF lines
only, RFC 5321 section 4.5.2, so we redo it on CRLF lines only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import aiosmtplib

from filterd import metrics, replies
from filterd.config import Config
from filterd.frontends.smtp.pool import Pool
from filterd.hostport import split_hostport
from filterd.replies import Reply

log = logging.getLogger(__name__)

SIZE_SLACK = 512         # our headers make the message a little larger than declared
_CHUNK = 256 * 1024      # bytes written before waiting for the transport to drain
_XFORWARD_LINE = 400     # bytes of attributes per XFORWARD command (Postfix keeps them < 512)

# MAIL/RCPT parameters and the EHLO keyword the next hop must show before we pass them on.
_NEEDS = {"SIZE": "size", "BODY": "8bitmime", "SMTPUTF8": "smtputf8", "RET": "dsn",
          "ENVID": "dsn", "NOTIFY": "dsn", "ORCPT": "dsn"}


def _addr(address: str) -> bytes:
    if address in ("", "<>"):
        return b"<>"   # the null reverse-path of bounces (RFC 5321 4.5.5); aiosmtpd says "<>"
    # aiosmtpd decodes arguments as UTF-8 with surrogateescape: this gives the original bytes.
    return b"<" + address.encode("utf-8", "surrogateescape") + b">"


class Relay:
    """Transactions to `config.next_hop` on pooled aiosmtplib connections (filterd/frontends/smtp/pool.py)."""

    def __init__(self, config: Config, helo_name: str) -> None:
        """`helo_name`: what we say in EHLO, the name we greet with (smtpd.greeting)."""
        self.host, self.port = split_hostport(config.next_hop)
        self.connect_timeout = float(config.timeouts.next_hop_connect)
        self.timeout = float(config.timeouts.next_hop)
        self.helo_name = helo_name
        self.pool = Pool(self._connect, config.relay.pool_size, config.relay.idle_timeout)

    async def start(self) -> None:
        """Connections are made on demand; this starts the pool's idle reaper."""
        await self.pool.start()

    async def stop(self) -> None:
        """QUIT the idle connections and keep none from now on (drain, then shutdown)."""
        await self.pool.stop()

    async def flush(self) -> None:
        """QUIT the idle connections now (reload); pooling goes on."""
        await self.pool.flush()

    async def open(self, xforward: dict[str, str] | None = None) -> Transaction:
        """A transaction on a pooled (or fresh) connection; never raises, failures become replies."""
        return Transaction(self, xforward or {})

    async def _connect(self) -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout,
            local_hostname=self.helo_name, start_tls=False, use_tls=False,
        )
        try:
            await smtp.connect(timeout=self.connect_timeout)
            await smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp


class Transaction:
    """One mail transaction on the next hop. Every method returns the reply for our client."""

    def __init__(self, relay: Relay, xforward: dict[str, str]) -> None:
        self.relay = relay
        self.xforward = xforward
        self.smtp: aiosmtplib.SMTP | None = None
        self.failed: Reply | None = None
        self._stale_ok = False   # a pooled connection may have been closed by the next hop

    async def mail(self, sender: str, params: list[str]) -> Reply:
        for attempt in (1, 2):
            reused = await self._connect()
            if self.smtp is None:
                return self.failed or replies.S451_NEXT_HOP_UNREACHABLE
            self._stale_ok = reused and attempt == 1
            reply = await self._command(b"MAIL", b"FROM:" + _addr(sender), *self._params(params))
            self._stale_ok = False
            # A pooled connection the next hop closed while idle: retry once on a fresh one.
            if reused and attempt == 1 and self.failed is replies.S451_NEXT_HOP_LOST:
                self.failed = None
                continue
            break
        if not reply.positive:
            self.close()
        return reply

    async def rcpt(self, recipient: str, params: list[str]) -> Reply:
        return await self._command(b"RCPT", b"TO:" + _addr(recipient), *self._params(params))

    async def data(self, head: bytes, body: bytes, start: int = 0) -> Reply:
        """DATA, then head + body[start:] dot-stuffed, the final dot; then the connection goes
        back to the pool. The body is never copied: it goes out as slices of `body`, a chunk
        at a time, each once the transport has sent the one before (so no second copy of a
        big message waits in the transport's buffer either)."""
        reply = await self._command(b"DATA")
        if self.failed or not reply.intermediate:
            self.close()
            return self.failed or reply
        assert self.smtp is not None and self.smtp.protocol is not None
        proto = self.smtp.protocol
        try:
            if len(head) + len(body) - start < _CHUNK:
                # Small (most mail): one write, so one send() on loopback, where each send
                # costs the kernel's delivery to the next hop too; the copy is cheaper.
                proto.write(b"".join((*stuffed(head, body, start), b".\r\n")))
            else:
                await self._stream(proto, stuffed(head, body, start))
                proto.write(b".\r\n")
            response = await proto.read_response(timeout=self.relay.timeout)
        except Exception as exc:  # noqa: BLE001 - every transport failure maps to a 451
            self._fail(exc)
            self.close()
            return self.failed or replies.S451_NEXT_HOP_LOST
        return self._finish(response)

    @staticmethod
    async def _stream(proto: Any, pieces: Iterator[bytes | memoryview]) -> None:
        """Write a big message piece by piece, waiting for the transport to drain after
        each _CHUNK bytes, so no second copy of it builds up in the transport's buffer."""
        pending = 0
        for piece in pieces:
            proto.write(piece)
            pending += len(piece)
            if pending >= _CHUNK:
                pending = 0
                # aiosmtplib's flow-control wait (StreamWriter.drain's own helper): returns
                # at once unless the transport asked us to pause. A private name, with
                # proto.write and read_response: aiosmtplib is pinned exactly
                # (pyproject.toml) and tests/test_pins.py checks they are there.
                await proto._drain_helper()

    async def abort(self) -> None:
        """RSET the next hop and return the connection to the pool (the client's RSET, a reject)."""
        if self.smtp is None:
            return
        reply = await self._command(b"RSET")
        if reply.positive and not self.failed:
            smtp, self.smtp = self.smtp, None
            self.relay.pool.release(smtp)
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection without ceremony (client vanished, failure)."""
        if self.smtp is not None:
            self.relay.pool.discard(self.smtp)
            self.smtp = None

    # Internals.

    async def _connect(self) -> bool:
        try:
            self.smtp, reused = await self.relay.pool.checkout()
        except Exception as exc:  # noqa: BLE001 - refused, unreachable, greeting 4xx/5xx, timeout
            log.warning("next hop %s:%s unreachable: %s", self.relay.host, self.relay.port, exc)
            metrics.NEXT_HOP_ERRORS.labels("connect").inc()
            self.failed = replies.S451_NEXT_HOP_UNREACHABLE
            self.smtp = None
            return False
        if self.xforward and self.smtp.supports_extension("xforward"):
            await self._send_xforward()
        return reused

    async def _send_xforward(self) -> None:
        assert self.smtp is not None
        allowed = set(self.smtp.esmtp_extensions.get("xforward", "").upper().split())
        items = [f"{k}={v}".encode("ascii", "replace") for k, v in self.xforward.items()
                 if k in allowed]
        while items and not self.failed:
            chunk: list[bytes] = []
            while items and sum(map(len, chunk)) + len(items[0]) < _XFORWARD_LINE:
                chunk.append(items.pop(0))
            if not chunk:  # one oversized attribute: Postfix would refuse it anyway
                items.pop(0)
                continue
            await self._command(b"XFORWARD", *chunk)

    def _params(self, params: list[str]) -> list[bytes]:
        """Pass on the parameters the next hop understands; SIZE grows by our headers."""
        assert self.smtp is not None
        out = []
        for param in params:
            name, _, value = param.partition("=")
            keyword = _NEEDS.get(name.upper())
            if keyword is None or not self.smtp.supports_extension(keyword):
                continue
            if name.upper() == "SIZE" and value.isdigit():
                param = f"SIZE={int(value) + SIZE_SLACK}"
            out.append(param.encode("utf-8", "surrogateescape"))
        return out

    async def _command(self, *args: bytes) -> Reply:
        if self.failed or self.smtp is None:
            return self.failed or replies.S451_NEXT_HOP_LOST
        try:
            response = await self.smtp.execute_command(*args, timeout=self.relay.timeout)
        except Exception as exc:  # noqa: BLE001 - timeouts, disconnects, garbage replies
            self._fail(exc)
            self.close()
            return self.failed or replies.S451_NEXT_HOP_LOST
        return self._reply(response)

    def _finish(self, response: aiosmtplib.SMTPResponse) -> Reply:
        reply = self._reply(response)
        if self.smtp is not None and not self.failed:
            smtp, self.smtp = self.smtp, None
            self.relay.pool.release(smtp)
        return reply

    def _reply(self, response: aiosmtplib.SMTPResponse) -> Reply:
        """The next hop's reply as ours; a 421 means it is closing, which for us is a 451."""
        if response.code == 421:
            metrics.NEXT_HOP_ERRORS.labels("tempfail").inc()
            self.failed = replies.S451_NEXT_HOP_LOST
            self.close()
            return self.failed
        if 400 <= response.code < 500:
            metrics.NEXT_HOP_ERRORS.labels("tempfail").inc()
        elif response.code >= 500:
            metrics.NEXT_HOP_ERRORS.labels("permfail").inc()
        return Reply(response.code, response.message)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            kind, self.failed = "timeout", replies.S451_NEXT_HOP_TIMEOUT
        elif isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError):
            kind, self.failed = "protocol", replies.S451_NEXT_HOP_LOST
        else:
            kind, self.failed = "protocol", replies.S451_NEXT_HOP_INVALID
        if self._stale_ok and self.failed is replies.S451_NEXT_HOP_LOST:
            log.info("next hop closed an idle pooled connection; reconnecting")
            return
        metrics.NEXT_HOP_ERRORS.labels(kind).inc()
        log.warning("next hop %s:%s: %s: %s", self.relay.host, self.relay.port,
                    type(exc).__name__, exc)


def stuffed(head: bytes, body: bytes, start: int = 0) -> Iterator[bytes | memoryview]:
    """head + body[start:] dot-stuffed (RFC 5321 4.5.2: a "." that begins a CRLF line is
    doubled) and ending in CRLF, as pieces: `head` (our few header lines) whole or stuffed,
    the body as memoryview slices between the dots to double, so it is never copied."""
    text = head.replace(b"\r\n.", b"\r\n..")
    if text.startswith(b"."):
        text = b"." + text
    if text:
        yield text
    view, pos, end = memoryview(body), start, len(body)
    if pos < end:
        # A line that starts at the seam: head ends a line, or ends with the CR of its CRLF.
        if (not text or text.endswith(b"\r\n")) and body.startswith(b".", pos):
            yield b"."
        elif text.endswith(b"\r") and body.startswith(b"\n.", pos):
            yield view[pos:pos + 1]
            yield b"."
            pos += 1
    while (hit := body.find(b"\r\n.", pos)) >= 0:
        yield view[pos:hit + 2]
        yield b"."                      # and the "." itself starts the next slice
        pos = hit + 2
    if pos < end:
        yield view[pos:]
    last = body[max(start, end - 2):end] if end > start else text[-2:]
    if (text or end > start) and not (text + last).endswith(b"\r\n"):
        yield b"\r\n"
