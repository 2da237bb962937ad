"""The message text after DATA (RFC 5321 4.1.1.4), read in large pieces into one buffer.

aiosmtpd reads DATA a line at a time and keeps every line as its own bytearray until the
final dot, then joins them: for an 8 MB base64 attachment that is 100,000 objects (about
twice the message in memory, three times at the join) and 100,000 trips round its read
loop. Here the text is read up to each ".\\r\\n" (or a megabyte at a time, where there is
none), appended to one bytearray, and un-stuffed in one pass at the end: the message is
held once, and a 4 KB message costs a few reads instead of a hundred.

The rules are aiosmtpd's, so that the protocol does not change: the data ends at a line
that is a lone dot; a leading dot is removed from every other line (4.5.2); lines end at
CRLF only (a bare LF or CR is data, 2.3.8); more than `size_limit` octets, counted as they
arrive, is 552 and a line longer than `line_limit` octets is 500 (4.5.3.1.6), both
answered only after the final dot, with nothing kept meanwhile (4.2.5).
"""

from __future__ import annotations

import asyncio
import enum
from typing import NamedTuple

_END = b".\r\n"


class Outcome(enum.Enum):
    OK = "ok"
    TOO_MUCH = "too much data"          # over size_limit: 552
    TOO_LONG = "line too long"          # over line_limit: 500


class Data(NamedTuple):
    outcome: Outcome
    content: bytearray                  # un-stuffed message; empty unless OK


async def read_data(reader: asyncio.StreamReader, size_limit: int | None,
                    line_limit: int) -> Data:
    """Read up to and including the final dot. Raises asyncio.IncompleteReadError when the
    client goes away first."""
    buf: bytearray | None = bytearray(b"\r\n")   # as if after DATA's CRLF: a line starts
    tail = b"\r\n"             # the last two octets read: does a ".\r\n" start a line?
    received = 0                # octets of data so far, the final dot not included
    line = 0                    # octets of the line in progress, since the last CRLF
    outcome = Outcome.OK
    while True:
        piece = await _piece(reader)
        done = piece.endswith(_END) and _before_end(tail, piece) == b"\r\n"
        if done:
            piece = piece[: -len(_END)]
        received += len(piece)
        longest, line = _lines(piece, line, tail, line_limit)
        tail = piece[-2:] if len(piece) >= 2 else (tail + piece)[-2:]
        if outcome is Outcome.OK and size_limit and received > size_limit:
            outcome = Outcome.TOO_MUCH
        elif outcome is Outcome.OK and max(longest, line) > line_limit:
            outcome = Outcome.TOO_LONG
        if outcome is not Outcome.OK:
            buf = None          # nothing kept of a message we refuse
        elif buf is not None:
            buf += piece
        if done:
            break
    if buf is None:
        return Data(outcome, bytearray())
    # Every line start follows a CRLF (ours in front too): drop one leading dot from each
    # (a copy only when some line has one), then our CRLF.
    content = bytearray(buf.replace(b"\r\n.", b"\r\n")) if b"\r\n." in buf else buf
    del content[:2]
    return Data(outcome, content)


async def _piece(reader: asyncio.StreamReader) -> bytes:
    """Up to the next ".\r\n", or what the stream limit allows when there is none."""
    try:
        return await reader.readuntil(_END)
    except asyncio.LimitOverrunError as exc:
        piece = await reader.read(exc.consumed)
        if not piece:
            raise asyncio.IncompleteReadError(b"", None) from exc
        return piece


def _before_end(tail: bytes, piece: bytes) -> bytes:
    """The two octets before the ".\r\n" that ends `piece`, read after `tail`."""
    return piece[-5:-3] if len(piece) >= 5 else (tail + piece[:-3])[-2:]


def _lines(piece: bytes, line: int, tail: bytes, limit: int) -> tuple[int, int]:
    """(longest line that `piece` completes, CRLF included; octets of the line it leaves
    open), where `line` octets of an open line came before it, ending in `tail`."""
    start, longest = 0, 0
    if tail.endswith(b"\r") and piece.startswith(b"\n"):   # a CRLF across two pieces
        start, longest, line = 1, line + 1, 0
    first = piece.find(b"\r\n", start)
    if first < 0:
        return longest, line + len(piece) - start
    last = piece.rfind(b"\r\n")
    longest = max(longest, line + first - start + 2)
    if last - first > limit:    # only a piece longer than the limit can hold a long line
        longest = max(longest, 2 + max(map(len, piece[first + 2: last].split(b"\r\n"))))
    return longest, len(piece) - last - 2
