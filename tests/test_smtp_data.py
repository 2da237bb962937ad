"""The text after DATA (filterd/frontends/smtp/data.py): aiosmtpd's rules, read in large pieces.

A property test holds read_data to a line-at-a-time reading of the same rules (aiosmtpd's),
for any bytes, any way the stream is cut into TCP segments and any limits; the end-to-end
tests send awkwardly cut and oversized data through the real daemon.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from filterd import replies
from filterd.frontends.smtp.data import Data, Outcome, read_data
from tests.fixtures.clients import code, ours_and_rest, raw, talk

_END = b".\r\n"


def line_at_a_time(stream: bytes, size_limit: int | None, line_limit: int) -> tuple[bool, bytes, bytes]:
    """(accepted, message, what follows the final dot), a CRLF-ended line at a time."""
    lines, pos, size, refused = [], 0, 0, False
    while True:
        end = stream.index(b"\r\n", pos) + 2
        line, pos = stream[pos:end], end
        if line == _END:
            break
        size += len(line)
        refused |= bool(size_limit and size > size_limit) or len(line) > line_limit
        lines.append(line[1:] if line.startswith(b".") else line)
    return not refused, b"" if refused else b"".join(lines), stream[pos:]


async def read_cut(stream: bytes, cuts: list[int], size_limit: int | None, line_limit: int,
                   stream_limit: int) -> tuple[Data, bytes]:
    reader = asyncio.StreamReader(limit=stream_limit)

    async def feed() -> None:
        last = 0
        for cut in sorted(cuts) + [len(stream)]:
            reader.feed_data(stream[last:cut])
            last = cut
            await asyncio.sleep(0)       # let read_data see each segment on its own
        reader.feed_eof()

    feeding = asyncio.ensure_future(feed())
    data = await read_data(reader, size_limit, line_limit)
    rest = await reader.read()
    await feeding
    return data, rest


_PIECES = st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n.", b"x" * 40,
                           b"\x00", b"\xff"])


@st.composite
def streams(draw: Any) -> tuple[bytes, list[int]]:
    body = b"".join(draw(st.lists(_PIECES, max_size=60)))
    body = body.removeprefix(_END)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    while b"\r\n.\r\n" in body:              # the final dot comes only where we put it
        body = body.replace(b"\r\n.\r\n", b"\r\nx\r\n")
    stream = body + _END + b"QUIT\r\n"       # a pipelined command after the dot stays unread
    return stream, draw(st.lists(st.integers(0, len(stream)), max_size=8))


@settings(max_examples=400, deadline=None)
@given(streams(), st.sampled_from([None, 10, 40, 1000]), st.sampled_from([5, 20, 60, 1000]),
       st.sampled_from([8, 16, 64, 65536]))
def test_read_data_follows_the_line_at_a_time_rules(case: tuple[bytes, list[int]], size_limit: int | None,
                                                    line_limit: int, stream_limit: int) -> None:
    stream, cuts = case
    accepted, message, after = line_at_a_time(stream, size_limit, line_limit)
    data, rest = asyncio.run(read_cut(stream, cuts, size_limit, line_limit, max(stream_limit, line_limit)))
    assert (data.outcome is Outcome.OK, bytes(data.content), rest) == (accepted, message, after)


def test_a_client_gone_mid_data_is_an_incomplete_read() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader(limit=64)
        reader.feed_data(b"Subject: x\r\n\r\nhalf a b" + b"o" * 200)
        reader.feed_eof()
        await read_data(reader, None, 64)

    try:
        asyncio.run(run())
    except asyncio.IncompleteReadError:
        return
    raise AssertionError("read_data returned for a stream without its final dot")


def test_data_cut_at_every_awkward_place_arrives_intact(filterd: Any, sink: Any) -> None:
    body = b"Subject: cut\r\n\r\n.dot\r\nend.\r\n..\r\nlast line\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    head = b"EHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
    data = stuffed + _END
    # cut inside the final CRLF.CRLF and after a CRLF that a dot follows
    cuts = [len(data) - 1, len(data) - 2, len(data) - 3, len(data) - 4, data.index(b"\r\n..") + 2]
    with raw(filterd.port) as (sock, reader):
        assert reader.readline().startswith(b"220")
        sock.sendall(head)
        last = 0
        for cut in sorted(set(cuts)) + [len(data)]:
            sock.sendall(data[last:cut])
            last = cut
            time.sleep(0.02)
        sock.sendall(b"QUIT\r\n")
        got = list(iter(reader.readline, b""))     # until filterd closes after QUIT
    finals = [line for line in got if line and line[3:4] == b" "]
    assert [int(line[:3]) for line in finals] == [250, 250, 250, 354, 250, 221], got
    assert ours_and_rest(sink.wait_for(1)[0].data)[1] == body


def test_a_line_over_the_limit_gets_500_after_the_dot_and_the_session_goes_on(filterd: Any, sink: Any) -> None:
    long_line = b"y" * ((1 << 20) + 10)
    got = talk(filterd.port, b"EHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: long\r\n\r\n"
               + long_line + b"\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: short\r\n\r\n"
               b"fine\r\n.\r\nQUIT\r\n", expect=10)
    assert [code(r) for r in got] == [250, 250, 250, 354, 500, 250, 250, 354, 250, 221], got
    assert got[4] == str(replies.S500_LINE_TOO_LONG)
    (received,) = sink.wait_for(1)
    assert ours_and_rest(received.data)[1] == b"Subject: short\r\n\r\nfine\r\n"


def test_a_big_message_is_held_once(make_filterd: Any, sink: Any) -> None:
    """8 MB of base64-like lines: relayed intact (the memory bench measures what it costs)."""
    fd = make_filterd()
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    body = b"Subject: big\r\n\r\n" + line * (8 * 1024 * 1024 // len(line))
    with socket.create_connection((fd.host, fd.port), timeout=60) as sock, sock.makefile("rb") as reader:
        assert reader.readline().startswith(b"220")
        sock.sendall(b"EHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        sock.sendall(body + _END + b"QUIT\r\n")
        finals = [line for line in iter(reader.readline, b"") if line[3:4] == b" "]
    assert [int(line[:3]) for line in finals] == [250, 250, 250, 354, 250, 221]
    assert ours_and_rest(sink.wait_for(1)[0].data)[1] == body


def test_replies_to_pipelined_commands_go_out_together(filterd: Any, sink: Any) -> None:
    """RFC 2920 4: MAIL's reply waits in filterd while RCPT's is being made (the next hop
    answers RCPT slowly here), then MAIL's, RCPT's and DATA's replies arrive together."""
    sink.behave(rcpt_delay=0.6)
    with socket.create_connection((filterd.host, filterd.port), timeout=10) as sock:
        got = b""
        while not got.endswith(b"\r\n") or b"220 " not in got:
            got += sock.recv(4096)
        sock.sendall(b"EHLO t\r\n")
        while b"\r\n250 " not in got:
            got += sock.recv(4096)
        sock.sendall(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        sock.settimeout(0.3)
        try:
            early = sock.recv(4096)
        except TimeoutError:
            early = b""
        assert early == b"", "MAIL's reply was sent before RCPT's was ready"
        sock.settimeout(10)
        group = b""
        while not group.startswith(b"250") or b"354 " not in group:
            group += sock.recv(4096)
        assert [line[:3] for line in group.split(b"\r\n") if line] == [b"250", b"250", b"354"]
        sock.sendall(b"Subject: grouped\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        tail = b""
        while b"221 " not in tail:
            chunk = sock.recv(4096)
            assert chunk, tail
            tail += chunk
    assert [line[:3] for line in tail.split(b"\r\n") if line] == [b"250", b"221"]
    assert ours_and_rest(sink.wait_for(1)[0].data)[1] == b"Subject: grouped\r\n\r\nbody\r\n"
