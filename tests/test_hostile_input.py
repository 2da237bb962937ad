"""Hostile messages through `filterd serve`: each gets a sensible reply, the daemon stays up,
and every accepted message reaches the next hop with its bytes intact plus our headers.

One daemon serves the whole module; after every test it must still be running and greeting.
Messages are generated here (or read from CPython's own email test data), never committed.
"""

from __future__ import annotations

import base64
import codecs
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.prereq import missing

from tests.fixtures.clients import Outcome, RawSession, our_headers_then, smtp_send
from tests.fixtures.daemon import Daemon
from tests.fixtures.smtp import Sink as NextHop

pytestmark = [pytest.mark.slow]

MB = 1024 * 1024
HEAD = (b"From: Hostile <hostile@example.org>\r\nTo: rcpt@example.com\r\n"
        b"Subject: hostile input\r\nMessage-ID: <hostile@example.org>\r\n")


def email_test_data() -> Path | None:
    """CPython's Lib/test/test_email/data of this interpreter, or of another one installed."""
    here = Path(os.__file__).parent / "test" / "test_email" / "data"
    if here.is_dir():
        return here
    major, minor = sys.version_info[:2]
    for pattern in (f"/usr/lib/python{major}.{minor}/test/test_email/data",
                    "/root/.pyenv/versions/*/lib/python3*/test/test_email/data",
                    "/usr/lib/python3*/test/test_email/data"):
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[-1]
    return None


EMAIL_DATA = email_test_data()
EMAIL_FILES = sorted(EMAIL_DATA.iterdir()) if EMAIL_DATA else []


def crlf(raw: bytes) -> bytes:
    """Bare LF and bare CR to CRLF: what SMTP requires (RFC 5321 2.3.8) and what is relayed."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw)


@pytest.fixture(scope="module")
def daemon(daemon_factory) -> Daemon:
    return daemon_factory()


@pytest.fixture
def hop(daemon: Daemon) -> Iterator[NextHop]:
    """The next hop, emptied; after the test the daemon must still be up and greeting."""
    daemon.next_hop.received.clear()
    daemon.next_hop.behave()
    yield daemon.next_hop
    assert daemon.healthy(), daemon.log()[-3000:]
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def accepted_intact(daemon: Daemon, hop: NextHop, message: bytes, **kwargs) -> bytes:
    """Send `message` (CRLF, ending in CRLF); it must be accepted and relayed intact."""
    outcome = smtp_send(daemon.port, message, **kwargs)
    assert outcome.code == 250, outcome
    (got,) = hop.wait_for(1)
    our_headers_then(message, got.data)
    return got.data


def assert_sensible(outcome: Outcome, hop: NextHop, message: bytes) -> None:
    """Accepted and relayed intact (line ends made CRLF), or refused for good with 5xx."""
    if outcome.code == 250:
        (got,) = hop.wait_for(1)
        our_headers_then(message, got.data)
    else:
        assert 500 <= outcome.code < 600, outcome  # a 4xx would make the MTA retry forever
        assert hop.received == []


# --------------------------------------------------------------------------- real-world oddities


@pytest.mark.parametrize("path", EMAIL_FILES or [None], ids=lambda p: p.name if p else "missing")
def test_cpython_email_test_data(daemon: Daemon, hop: NextHop, path: Path | None) -> None:
    if path is None:
        missing("CPython's test/test_email/data not found (Debian: libpython3.11-testsuite)")
    raw = path.read_bytes()
    if path.name.startswith("msg_"):
        message = crlf(raw).rstrip(b"\r\n") + b"\r\n"
        accepted_intact(daemon, hop, message)
    else:  # images and sounds: binary bytes as a message body
        message = HEAD + b"\r\n" + raw + b"\r\n"
        assert_sensible(smtp_send(daemon.port, message), hop, message)


def test_nul_bytes(daemon: Daemon, hop: NextHop) -> None:
    message = HEAD + b"X-Nul: a\x00b\r\n\r\nbody \x00\x00 with NULs\r\n\x00\r\n"
    accepted_intact(daemon, hop, message)


@pytest.mark.parametrize("ending", [b"\n", b"\r"], ids=["bare-LF", "bare-CR"])
def test_bare_line_endings(daemon: Daemon, hop: NextHop, ending: bytes) -> None:
    lines = [b"From: a@example.org", b"Subject: bare line ends", b"", b"one", b".dot", b"three"]
    # CRLF once at the very end so the SMTP end-of-data (CRLF.CRLF) is well-formed.
    message = ending.join(lines) + b"\r\n"
    assert_sensible(smtp_send(daemon.port, message), hop, message)


def test_ten_thousand_character_lines(daemon: Daemon, hop: NextHop) -> None:
    long_header = b"X-Long: " + b"h" * 10_000 + b"\r\n"
    message = HEAD + long_header + b"\r\n" + (b"x" * 10_000 + b"\r\n") * 3 + b"." * 10_000 + b"\r\n"
    assert_sensible(smtp_send(daemon.port, message), hop, message)
    assert hop.received, "long lines are legal in practice (Postfix accepts them); keep them"


def test_invalid_utf8_in_headers(daemon: Daemon, hop: NextHop) -> None:
    message = (b"From: \xff\xfe Broken <a@example.org>\r\nTo: rcpt@example.com\r\n"
               b"Subject: caf\xc3 \xe9t\xe9 \xed\xa0\x80 surrogate\r\nX-Bytes: \x80\x81\xc0\xaf\r\n"
               b"\r\nbody\r\n")
    accepted_intact(daemon, hop, message)


def test_eight_bit_declared_as_seven_bit(daemon: Daemon, hop: NextHop) -> None:
    message = HEAD + b"Content-Type: text/plain; charset=latin-1\r\n\r\nd\xe9j\xe0 vu \xff\r\n"
    outcome = smtp_send(daemon.port, message, mail_options=["BODY=7BIT"])
    assert_sensible(outcome, hop, message)


def nested_multipart(depth: int) -> bytes:
    parts = []
    for level in range(depth):
        parts.append(b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n"
                     % (level, level))
    parts.append(b"Content-Type: text/plain\r\n\r\nthe innermost part\r\n")
    for level in reversed(range(depth)):
        parts.append(b"--b%d--\r\n" % level)
    return HEAD + b"MIME-Version: 1.0\r\n" + b"".join(parts)


def test_multipart_nested_100_levels(daemon: Daemon, hop: NextHop) -> None:
    accepted_intact(daemon, hop, nested_multipart(100))


def test_empty_body(daemon: Daemon, hop: NextHop) -> None:
    accepted_intact(daemon, hop, HEAD + b"\r\n")


def test_zero_byte_data(daemon: Daemon, hop: NextHop) -> None:
    """DATA followed at once by the terminating dot: no headers, no body, nothing."""
    with RawSession(daemon.port) as session:
        assert session.command(b"EHLO client.test.invalid").startswith("250")
        assert session.command(b"MAIL FROM:<a@example.org>").startswith("250")
        assert session.command(b"RCPT TO:<rcpt@example.com>").startswith("250")
        assert session.command(b"DATA").startswith("354")
        reply = session.command(b".")
    assert reply[:1] in ("2", "5"), reply
    if reply.startswith("250"):
        (got,) = hop.wait_for(1)
        our_headers_then(b"", got.data)


def test_thirty_megabyte_attachment_passes_unscored(daemon: Daemon, hop: NextHop) -> None:
    blob = base64.encodebytes(os.urandom(30 * MB)).replace(b"\n", b"\r\n")
    message = (HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n"
               b"\r\n--xx\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--xx\r\n"
               b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
               b"\r\n" + blob + b"--xx--\r\n")
    data = accepted_intact(daemon, hop, message)
    hop.received.clear()
    assert b"X-Spam-Status: Skipped" in data[:1000]  # above scoring.max_bytes (10 MiB)


# --------------------------------------------------------------------------- protocol abuse


def test_declared_size_over_the_limit_is_refused_at_mail(daemon: Daemon, hop: NextHop) -> None:
    outcome = smtp_send(daemon.port, HEAD + b"\r\nsmall\r\n", mail_options=[f"SIZE={60 * MB}"])
    assert outcome.code == 552, outcome
    assert hop.received == []


def test_undeclared_data_over_the_limit_gets_552(daemon: Daemon, hop: NextHop) -> None:
    message = HEAD + b"\r\n" + (b"y" * 1022 + b"\r\n") * (51 * 1024)  # 51 MiB > 50 MiB
    outcome = smtp_send(daemon.port, message)
    assert outcome.code == 552, outcome
    assert hop.received == []


def test_thousands_of_recipients(daemon: Daemon, hop: NextHop) -> None:
    rcpts = [f"user{i}@example.com" for i in range(3000)]
    message = HEAD + b"\r\nto many people\r\n"
    outcome = smtp_send(daemon.port, message, rcpts=rcpts)
    assert outcome.code == 250, outcome
    assert outcome.rcpt_codes.count(250) == 1000  # max_recipients default
    assert set(outcome.rcpt_codes[1000:]) == {452}  # RFC 5321 4.5.3.1.10: the client retries
    (got,) = hop.wait_for(1)
    assert got.rcpt_tos == rcpts[:1000]
    our_headers_then(message, got.data)


GARBAGE_TABLE = Path(__file__).parent / "data" / "hostile" / "garbage_commands.tsv"


def garbage_commands() -> list[tuple[bytes, str, str]]:
    """(command bytes, expected reply regex, why) from the behaviour table."""
    rows = []
    for line in GARBAGE_TABLE.read_text(encoding="ascii").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        command, expected, why = line.split("\t")
        raw = command.replace("{A*5000}", "A" * 5000).encode("latin-1")
        rows.append((codecs.escape_decode(raw)[0], expected, why))
    return rows


def test_garbage_commands_get_errors_and_the_session_recovers(daemon: Daemon, hop: NextHop) -> None:
    with RawSession(daemon.port) as session:
        assert session.greeting.startswith("220")
        assert session.command(b"EHLO client.test.invalid").startswith("250")
        for command, expected, why in garbage_commands():
            reply = session.command(command)
            assert re.match(f"({expected})[ -]", reply), (command[:40], why, reply)
        assert session.command(b"RSET").startswith("250")
        assert session.command(b"MAIL FROM:<a@example.org>").startswith("250")
        assert session.command(b"RCPT TO:<rcpt@example.com>").startswith("250")
        assert session.command(b"DATA").startswith("354")
        session.send(HEAD + b"\r\nafter the garbage\r\n")
        assert session.command(b".").startswith("250")
        assert session.command(b"QUIT").startswith("221")
    (got,) = hop.wait_for(1)
    our_headers_then(HEAD + b"\r\nafter the garbage\r\n", got.data)


def test_binary_noise_instead_of_smtp(daemon: Daemon, hop: NextHop) -> None:
    noise = bytes(range(256)) * 64 + b"\r\n" + os.urandom(64 * 1024)
    replies = []
    with RawSession(daemon.port) as session:
        try:
            session.send(noise)
            session.send(b"\r\nQUIT\r\n")
            while reply := session.reply():
                replies.append(reply)
        except ConnectionResetError:
            pass  # the daemon may hang up on noise; it must not answer it with a 2xx
    assert all(re.match(r"[45]\d\d|221", r) for r in replies), replies[:5]
    assert hop.received == []


def envelope_roundtrip(daemon: Daemon, hop: NextHop, sender: bytes, rcpt: bytes) -> None:
    """Refused with 5xx, or relayed with exactly the envelope addresses the client gave."""
    with RawSession(daemon.port) as session:
        assert session.command(b"EHLO client.test.invalid").startswith("250")
        mail = session.command(b"MAIL FROM:<" + sender + b">")
        reply = session.command(b"RCPT TO:<" + rcpt + b">") if mail[:1] == "2" else mail
        if reply[:1] == "2":
            assert session.command(b"DATA").startswith("354")
            session.send(HEAD + b"\r\nbody\r\n")
            reply = session.command(b".")
    assert re.match(r"250|5\d\d", reply), (mail, reply)
    if reply.startswith("250"):
        (got,) = hop.wait_for(1)
        our_headers_then(HEAD + b"\r\nbody\r\n", got.data)
        # aiosmtpd on both sides keeps undecodable bytes as surrogate escapes.
        assert got.mail_from == sender.decode("utf-8", "surrogateescape")
        assert got.rcpt_tos == [rcpt.decode("utf-8", "surrogateescape")]


def test_invalid_utf8_in_envelope_addresses(daemon: Daemon, hop: NextHop) -> None:
    """Non-ASCII bytes that are not even UTF-8, without SMTPUTF8 (RFC 6531 3.4 forbids it)."""
    envelope_roundtrip(daemon, hop, b"\xc3\xc3bad@example.org", b"r\xff\xfe@example.com")


def test_unbalanced_parenthesis_in_sender_is_not_truncated(daemon: Daemon, hop: NextHop) -> None:
    """aiosmtpd alone reads '(' as an RFC 5322 comment and would relay MAIL FROM:<x>."""
    envelope_roundtrip(daemon, hop, b"x(bad@example.org", b"rcpt@example.com")
