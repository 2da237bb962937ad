"""spamd's wire format: reading a request and framing an answer, per SPAMC/1.x version.

The facts come from SpamAssassin's spamd (its PROTOCOL file and spamd.raw, 4.0):

    CHECK SPAMC/1.5\\r\\n            verb and protocol version
    Content-length: 1234\\r\\n       optional: without it the body runs to the end of the
    User: alice\\r\\n                stream (the client half-closes its side)
    Compress: zlib\\r\\n             optional: the body is zlib data (needs Content-length)
    \\r\\n
    <message>

Headers are read only for versions above 1.0 (PING and SKIP: from 1.5), at most 255 of
them; unknown ones are ignored. Errors are one line, `SPAMD/1.0 <sysexits code> <text>`,
with spamd's codes and texts: 76 `Bad header line: (...)` for a malformed request, 69
`Service Unavailable: ...`, 79 `Timeout: (...)`. Where we differ from spamd, on purpose:

* header names match in any case (spamd wants `Content-length` exactly and would wait
  for the end of the stream on `Content-Length`);
* a line is at most 1 KiB and the body at most `max_message_size` (spamd has neither
  bound): past it, `65 Message too large` (EX_DATAERR), nothing read further;
* an unknown `Message-class` is refused (spamd means to, but its check never fires) and
  so is `Set` without a class (spamd would learn it as ham);
* a version we cannot read (`SPAMC/x`) is a bad request line (spamd reads it as 0).
"""

from __future__ import annotations

import asyncio
import re
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from filterd.learning import Label

EX_OK, EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL, EX_PROTOCOL, EX_TIMEOUT = 0, 65, 69, 75, 76, 79
VERBS = frozenset({"CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "PROCESS", "HEADERS",
                   "PING", "SKIP", "TELL"})
MAX_HEADERS = 255            # spamd's own limit ("too many headers")
MAX_LINE = 1024
_CHUNK = 65536
_REQUEST = re.compile(r"([A-Z_]+) SPAMC/(\d+)\.(\d+)")


class SpamdError(Exception):
    """A request we refuse, answered with one line and the connection closed."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text

    def line(self) -> bytes:
        return f"SPAMD/1.0 {self.code} {self.text}\r\n".encode("latin-1", "replace")


def bad_header(detail: str) -> SpamdError:
    """spamd's protocol_error(): EX_PROTOCOL with its fixed prefix."""
    return SpamdError(EX_PROTOCOL, f"Bad header line: {detail}")


def unavailable(detail: str) -> SpamdError:
    """spamd's service_unavailable_error(): EX_UNAVAILABLE."""
    return SpamdError(EX_UNAVAILABLE, f"Service Unavailable: {detail}")


def too_large(limit: int) -> SpamdError:
    return SpamdError(EX_DATAERR, f"Message too large: over max_message_size ({limit} bytes)")


@dataclass
class Request:
    """One request's line and headers (the body is read by read_body)."""

    verb: str
    version: tuple[int, int]
    length: int | None = None
    user: str | None = None
    compressed: bool = False
    message_class: Label | None = None
    set_local: bool = False
    remove_local: bool = False

    def at_least(self, major: int, minor: int) -> bool:
        return self.version >= (major, minor)


async def read_request(reader: asyncio.StreamReader) -> Request:
    """The request line and headers; SpamdError if they are not a request spamd takes."""
    line = await _line(reader, "(closed before headers)")
    match = _REQUEST.fullmatch(line)
    if match is None or match.group(1) not in VERBS:
        raise bad_header(_printable(line))
    request = Request(match.group(1), (int(match.group(2)), int(match.group(3))))
    reads_headers = (request.at_least(1, 5) if request.verb in ("PING", "SKIP")
                     else request.verb == "TELL" or request.version > (1, 0))
    if reads_headers:
        await _headers(reader, request)
    return request


async def _headers(reader: asyncio.StreamReader, request: Request) -> None:
    for _ in range(MAX_HEADERS + 1):
        line = await _line(reader, "(EOF during headers)")
        if not line:
            return
        name, sep, value = line.partition(":")
        if not sep:
            raise bad_header("(header not in 'Name: value' format)")
        _header(request, name.strip().lower(), value.lstrip(" \t"))
    raise bad_header("(too many headers)")


def _header(request: Request, name: str, value: str) -> None:
    if name == "content-length":
        if not value.isdigit() or not value.isascii():
            raise bad_header("(Content-Length contains non-numeric bytes)")
        request.length = int(value)
    elif name == "user":
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise bad_header("(User header contains control chars)")
        request.user = value
    elif name == "compress":
        if "zlib" not in value.lower():
            raise bad_header(f"(compression type not supported: {_printable(value)})")
        request.compressed = True
    elif name == "message-class":
        label = value.strip().lower()
        if label not in ("spam", "ham"):
            raise bad_header("(Message-class header contains invalid class)")
        request.message_class = "spam" if label == "spam" else "ham"
    elif name == "set":
        request.set_local = "local" in value.lower()
    elif name == "remove":
        request.remove_local = "local" in value.lower()


class Body(NamedTuple):
    """A request's message: `data`, of which `size` bytes came (more than len(data) when
    read_body kept only the start)."""

    data: bytes
    size: int


async def read_body(reader: asyncio.StreamReader, request: Request, limit: int,
                    keep: int | None = None) -> Body:
    """The message: Content-length bytes, or up to the end of the stream; inflated when
    compressed. At most `limit` bytes of message, or SpamdError. `keep`: only the first
    `keep` bytes are held, the rest is read, counted and dropped (a scan that answers no
    message back needs no more than scoring.max_bytes + 1 to know it is over)."""
    keep = limit if keep is None else min(keep, limit)
    if request.compressed:
        if request.length is None:
            raise unavailable("Compress requires Content-length header")
        return _inflate(await _exactly(reader, request.length, limit), limit, keep)
    if request.length is not None and request.length <= keep:
        return Body(data := await _exactly(reader, request.length, limit), len(data))
    if request.length is not None and request.length > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    kept = size = 0
    while request.length is None or size < request.length:
        want = _CHUNK if request.length is None else min(_CHUNK, request.length - size)
        chunk = await reader.read(want)
        if not chunk:
            if request.length is not None:
                raise bad_header(f"(Content-Length mismatch: Expected {request.length} bytes, "
                                 f"got {size} bytes)")
            break
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        if kept < keep:
            chunks.append(chunk[: keep - kept])
            kept += len(chunks[-1])
    return Body(b"".join(chunks), size)


async def _exactly(reader: asyncio.StreamReader, length: int, limit: int) -> bytes:
    if length > limit:
        raise too_large(limit)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise bad_header(f"(Content-Length mismatch: Expected {length} bytes, "
                         f"got {len(exc.partial)} bytes)") from None


def _inflate(data: bytes, limit: int, keep: int) -> Body:
    """`data` inflated: its first `keep` bytes and its size, which may not pass `limit`."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max(keep, 1))
        size = len(out)
        while not inflater.eof and size <= limit:   # the rest counted, not kept
            piece = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
            if not piece:
                break    # the input ended before the stream did
            size += len(piece)
    except zlib.error as exc:
        raise unavailable(f"zlib: {exc}") from None
    if size > limit:
        raise too_large(limit)
    if not inflater.eof:
        raise unavailable("zlib: failed to find end of zlib stream")
    return Body(out, size)


async def _line(reader: asyncio.StreamReader, at_eof: str) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise bad_header("(line too long)") from None
    except asyncio.IncompleteReadError:
        raise bad_header(at_eof) from None
    if len(raw) > MAX_LINE:
        raise bad_header("(line too long)")
    return raw.decode("latin-1").removesuffix("\n").removesuffix("\r")


def _printable(text: str, most: int = 80) -> str:
    shown = "".join(c if " " <= c <= "~" else "?" for c in text)
    return shown if len(shown) <= most else shown[:most] + "..."


# --- answers -------------------------------------------------------------------------------

def spam_line(request: Request, flagged: bool, score: str, threshold: str) -> str:
    """`Spam: True ; 12.3 / 5.0`; REPORT_IFSPAM says Yes/No, as spamd does."""
    if request.verb == "REPORT_IFSPAM":
        word = "Yes" if flagged else "No"
    else:
        word = "True" if flagged else "False"
    return f"Spam: {word} ; {score} / {threshold}"


def answer(request: Request, spam: str, body: bytes | None) -> bytes:
    """The framing spamd uses for `request`'s verb and version (spamd.raw, check()).

    CHECK: the Spam line only. From SPAMC/1.3: Content-length, then Spam, before a body.
    Below 1.3 no Content-length for SYMBOLS/REPORT (Exim sends REPORT SPAMC/1.2 and reads
    everything after `Spam: ...\\r\\n\\r\\n` as the report); PROCESS/HEADERS at 1.2 carry
    Content-length but no Spam line, and below 1.2 only the message follows.
    """
    status = "SPAMD/1.1 0 EX_OK\r\n"
    if body is None:      # CHECK
        return f"{status}{spam}\r\n\r\n".encode()
    if request.at_least(1, 3):
        head = f"{status}Content-length: {len(body)}\r\n{spam}\r\n\r\n"
    elif request.verb not in ("PROCESS", "HEADERS"):
        head = f"{status}{spam}\r\n\r\n"
    elif request.at_least(1, 2):
        head = f"{status}Content-length: {len(body)}\r\n\r\n"
    else:
        head = "SPAMD/1.0 0 EX_OK\r\n"
    return head.encode() + body


def told(did_set: bool, did_remove: bool) -> bytes:
    """TELL's answer, byte for byte as spamd's dotell() writes it (note the extra CRLF)."""
    headers = ("DidSet: local\r\n" if did_set else "") + ("DidRemove: local\r\n" if did_remove else "")
    return f"SPAMD/1.1 0 EX_OK\r\n{headers}\r\n\r\n".encode()


PONG = b"SPAMD/1.5 0 PONG\r\n"
