"""The spamd listener with SpamAssassin's own client, spamc, and hostile raw requests.

The real `filterd serve` runs with `spamd: {listen: 127.0.0.1:0}` beside its SMTP port.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from filterd.frontends.spamd import points
from filterd.frontends.spamd_protocol import Body, Request, read_body
from filterd.verdict import Policy
from tests.fixtures.frontends import SPAMC, Spamc, exchange, frontend_port, require_spamc, spamc
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.smtp import free_port

pytestmark = [pytest.mark.slow]

# A ham message as real mail arrives (trace and reply headers): a two-line message with no
# headers at all scores near the model's calibrated tag threshold, which says nothing.
HAM = (b"Received: from mail.example.org (mail.example.org [192.0.2.1])\r\n"
       b"\tby mx.example.com; Tue, 1 Oct 2002 10:00:00 +0100\r\n"
       b"Message-ID: <20021001090000.GA1234@example.org>\r\n"
       b"Date: Tue, 1 Oct 2002 10:00:00 +0100\r\nFrom: Alice <a@example.org>\r\n"
       b"To: Bob <b@example.com>\r\nSubject: Re: lunch on Tuesday\r\n"
       b"In-Reply-To: <20020930.GB99@example.com>\r\nUser-Agent: Mutt/1.4i\r\n\r\n"
       b"On Mon, Sep 30, 2002 at 05:12:00PM +0100, Bob wrote:\r\n"
       b"> Shall we meet for lunch on Tuesday?\r\n\r\n"
       b"Yes, noon at the usual place works for me. I will bring the notes from\r\n"
       b"the meeting so we can go through them.\r\n\r\nAlice\r\n")


@pytest.fixture(scope="module")
def served(daemon_factory: Any) -> tuple[Any, int]:
    daemon = daemon_factory(spamd={"listen": "127.0.0.1:0"}, max_message_size=200_000,
                            scoring={"max_bytes": 100_000})
    return daemon, frontend_port(daemon, "spamd")


@pytest.fixture(scope="module")
def spam(corpus_dir: Path) -> bytes:
    return corpus_messages(corpus_dir, "spam", 1)[0]


def test_check_says_spam_with_points_and_exit_status(served: tuple[Any, int], spam: bytes) -> None:
    require_spamc()
    daemon, port = served
    got = spamc(port, spam, "-c")
    assert got.returncode == 1, got          # spamc -c: 1 = spam
    score, threshold = (float(x) for x in got.out.decode().strip().split("/"))
    assert threshold == 5.0 and score >= 5.0
    ham = spamc(port, HAM, "-c")
    assert ham.returncode == 0, ham
    assert float(ham.out.decode().split("/")[0]) < 5.0
    assert "frontend=spamd" in daemon.log()


def test_report_and_symbols_name_the_features(served: tuple[Any, int], spam: bytes) -> None:
    require_spamc()
    _daemon, port = served
    report = spamc(port, spam, "-R")
    text = report.out.decode()
    assert re.match(r"\d+\.\d/5\.0\n", text), text
    assert "recurrent part of the network" in text and "all other n-grams" in text
    assert re.search(r"[+-]\d+\.\d{3}  (word|chars) \"", text), text
    symbols = spamc(port, spam, "-y")
    names = symbols.out.decode().strip().split(",")
    # only the features that pushed towards spam, each once, readable rule names
    pushed = re.findall(r"^ +\+\d+\.\d{3}  (?:word|chars) ", text, re.M)
    assert 0 < len(names) == len(pushed) <= 10, (names, text)
    assert len(set(names)) == len(names), names
    assert all(re.fullmatch(r"FD_(WORD|CHARS)_([A-Z0-9_]|x[0-9A-F]{2,})+", n) for n in names), names


def test_symbols_escape_odd_characters_and_skip_hammy_features() -> None:
    from filterd.pipeline.explain import Explanation, Reason, symbols

    reasons = (Reason("word", "|", 1.0), Reason("chars", "é_a", 0.5), Reason("word", "|", 0.4),
               Reason("word", "free", -2.0), Reason("chars", "Free", 0.3))
    assert symbols(Explanation(1.0, 0.0, 0.0, reasons)) == [
        "FD_WORD_x7C", "FD_CHARS_xE9_A", "FD_CHARS_FREE"]


def test_every_spamc_mode(served: tuple[Any, int], spam: bytes) -> None:
    """spamc's modes against the listener, each with what spamc prints and exits."""
    require_spamc()
    _daemon, port = served
    got = spamc(port, spam, "-r")              # REPORT_IFSPAM on spam: the report
    assert "recurrent part of the network" in got.out.decode(), got
    got = spamc(port, HAM, "-r")               # ... on ham: nothing but the score line
    assert "recurrent part" not in got.out.decode(), got
    got = spamc(port, spam, "-E")              # filter and exit 1 for spam
    assert got.returncode == 1 and got.out.startswith(b"X-Spam-Flag: YES\r\n"), got
    assert spamc(port, HAM, "-E").returncode == 0
    got = spamc(port, HAM, "--headers")        # HEADERS: spamc puts the body back itself
    assert got.returncode == 0 and got.out.startswith(b"X-Spam-Flag: NO\r\n"), got
    assert got.out.endswith(b"User-Agent: Mutt/1.4i\r\n\r\n" + HAM.split(b"\r\n\r\n", 1)[1]), got
    assert spamc(port, b"", "-K") == Spamc(0, b"SPAMD/1.5 0\n"), "PING: spamc prints version and code"
    got = spamc(port, HAM, "-c", "-u", "alice")  # User: is accepted
    assert got.returncode == 0, got
    got = spamc(port, HAM, "-H", "-c")        # -H: shuffle the resolved addresses (one here)
    assert got.returncode == 0 and got.out.endswith(b"/5.0\n"), got
    bsmtp = (b"HELO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
             b"DATA\r\n" + HAM.replace(b"\r\n.", b"\r\n..") + b".\r\nQUIT\r\n")
    got = spamc(port, bsmtp, "-B")             # BSMTP: spamc unwraps and rewraps the message
    assert got.out.startswith(b"HELO client.example\r\n") and b"\r\nX-Spam-Flag: NO\r\n" in got.out, got
    assert got.out.endswith(b".\r\nQUIT\r\n"), got


def test_spamc_fails_open_while_filterd_is_down(spam: bytes) -> None:
    """Nothing listening: spamc -x fails (exit 69, EX_UNAVAILABLE); without -x, as procmail's
    `| spamc` runs it, the message comes back unchanged and -c says 0/0."""
    require_spamc()
    port = free_port()
    args = [SPAMC, "-d", "127.0.0.1", "-p", str(port), "--connect-retries", "1"]
    strict = subprocess.run([*args, "-x"], input=spam, capture_output=True, timeout=60, check=False)
    assert strict.returncode == 69, strict
    plain = subprocess.run(args, input=spam, capture_output=True, timeout=60, check=False)
    assert plain.returncode == 0 and plain.stdout == spam, plain.stderr
    check = subprocess.run([*args, "-c"], input=spam, capture_output=True, timeout=60, check=False)
    assert check.stdout == b"0/0\n", check


def test_spamc_passes_too_big_and_refused_messages_through(served: tuple[Any, int]) -> None:
    """Without -x, spamc falls back to the message unchanged when we refuse it (here: over
    max_message_size, 200 KB in this daemon) or when it does not send it (over its -s)."""
    require_spamc()
    _daemon, port = served
    big = HAM + b"y" * 250_000 + b"\r\n"
    result = subprocess.run([SPAMC, "-d", "127.0.0.1", "-p", str(port), "-s", "1000000"],
                            input=big, capture_output=True, timeout=60, check=False)
    assert result.stdout == big, result.stderr
    raw = exchange(port, b"PROCESS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(big) + big)
    assert raw == b"SPAMD/1.0 65 Message too large: over max_message_size (200000 bytes)\r\n"


def test_plain_spamc_returns_the_message_with_our_headers(served: tuple[Any, int], spam: bytes) -> None:
    require_spamc()
    _daemon, port = served
    got = spamc(port, spam)
    assert got.returncode == 0
    head, _, body = got.out.partition(b"\r\n\r\n")
    assert head.startswith(b"X-Spam-Flag: YES\r\nX-Spam-Score: ")
    assert got.out.endswith(spam.partition(b"\r\n\r\n")[2])
    forged = b"X-Spam-Flag: NO\r\n" + HAM
    assert b"X-Spam-Untrusted-Flag: NO" in spamc(port, forged).out


def test_plain_spamc_keeps_an_mbox_from_line_first(served: tuple[Any, int]) -> None:
    """procmail's `| spamc` hands over an mbox message: its "From " line stays the first
    line and our headers follow it (SpamAssassin does the same), for PROCESS and HEADERS."""
    require_spamc()
    _daemon, port = served
    from_line = b"From alice@example.org  Tue Oct  1 10:00:00 2002\n"
    for args in ((), ("--headers",)):
        got = spamc(port, from_line + HAM, *args)
        assert got.out.startswith(from_line + b"X-Spam-Flag: NO\r\n"), got
        assert b"\r\nReceived: from mail.example.org" in got.out


def test_ping_and_raw_protocol_answers(served: tuple[Any, int]) -> None:
    _daemon, port = served
    assert exchange(port, b"PING SPAMC/1.5\r\n\r\n") == b"SPAMD/1.5 0 PONG\r\n"
    assert exchange(port, b"PING SPAMC/1.2\r\n", shut=False) == b"SPAMD/1.5 0 PONG\r\n"
    assert exchange(port, b"SKIP SPAMC/1.5\r\n\r\n") == b""
    answer = exchange(port, b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(HAM) + HAM)
    assert re.fullmatch(rb"SPAMD/1\.1 0 EX_OK\r\nSpam: False ; -?\d+\.\d / 5\.0\r\n\r\n", answer), answer
    headers = exchange(port, b"HEADERS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(HAM) + HAM)
    ham_head = HAM.split(b"\r\n\r\n")[0].split(b"\r\n", 2)[2]
    assert re.match(rb"SPAMD/1\.1 0 EX_OK\r\nContent-length: \d+\r\nSpam: False ", headers), headers
    assert headers.endswith(ham_head + b"\r\n\r\n")


def test_framing_follows_the_protocol_version(served: tuple[Any, int], spam: bytes) -> None:
    """As spamd: no Content-length below SPAMC/1.3 for SYMBOLS and REPORT (Exim sends REPORT
    SPAMC/1.2 and keeps all after `Spam: ...\\r\\n\\r\\n` as $spam_report), SYMBOLS
    ends in CRLF there; PROCESS at 1.2 has Content-length and no Spam line, and below 1.2
    only the message follows."""
    _daemon, port = served

    def ask(line: bytes, data: bytes = spam) -> bytes:
        return exchange(port, line + b"\r\nContent-length: %d\r\n\r\n" % len(data) + data)

    got = ask(b"REPORT SPAMC/1.2")
    assert re.match(rb"SPAMD/1\.1 0 EX_OK\r\nSpam: True ; \d+\.\d / 5\.0\r\n\r\nfilterd: spam ", got), got
    got = ask(b"SYMBOLS SPAMC/1.2")
    assert re.fullmatch(rb"SPAMD/1\.1 0 EX_OK\r\nSpam: True ; [\d.]+ / 5\.0\r\n\r\nFD_[\w,]+\r\n", got), got
    got = ask(b"SYMBOLS SPAMC/1.5")
    head, _, body = got.partition(b"\r\n\r\n")
    assert re.fullmatch(rb"SPAMD/1\.1 0 EX_OK\r\nContent-length: (\d+)\r\nSpam: True ; [\d.]+ / 5\.0", head)
    assert int(head.split(b"Content-length: ")[1].split(b"\r\n")[0]) == len(body) and not body.endswith(b"\r\n")
    got = ask(b"PROCESS SPAMC/1.2", HAM)
    assert re.match(rb"SPAMD/1\.1 0 EX_OK\r\nContent-length: \d+\r\n\r\nX-Spam-Flag: NO\r\n", got), got
    got = ask(b"PROCESS SPAMC/1.1", HAM)
    assert got.startswith(b"SPAMD/1.0 0 EX_OK\r\nX-Spam-Flag: NO\r\n") and got.endswith(HAM.split(b"\r\n\r\n", 1)[1])
    got = ask(b"REPORT_IFSPAM SPAMC/1.5", HAM)
    assert re.fullmatch(rb"SPAMD/1\.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; -?[\d.]+ / 5\.0\r\n\r\n", got), got
    assert b"\r\nSpam: Yes ; " in ask(b"REPORT_IFSPAM SPAMC/1.5")


def test_body_without_content_length_runs_to_the_end_of_the_stream(served: tuple[Any, int]) -> None:
    """Haraka's plugin sends `HEADERS SPAMC/1.4` and `User:` without Content-length, then the
    message, then half-closes: spamd reads to the end, and so do we, up to max_message_size."""
    _daemon, port = served
    got = exchange(port, b"HEADERS SPAMC/1.4\r\nUser: haraka\r\n\r\n" + HAM)
    assert re.match(rb"SPAMD/1\.1 0 EX_OK\r\nContent-length: \d+\r\nSpam: False ; ", got), got
    assert got.endswith(b"User-Agent: Mutt/1.4i\r\n\r\n")
    big = b"CHECK SPAMC/1.5\r\n\r\n" + HAM + b"z" * 210_000
    assert exchange(port, big) == b"SPAMD/1.0 65 Message too large: over max_message_size (200000 bytes)\r\n"


def test_a_scan_over_max_bytes_is_skipped_and_logged_with_its_size(served: tuple[Any, int]) -> None:
    """CHECK holds only scoring.max_bytes + 1 of the message (read_body's keep): the answer
    and the log line are as for the whole message, which is not scored."""
    daemon, port = served
    big = HAM + b"z" * 150_000 + b"\r\n"           # over max_bytes (100 KB), under 200 KB
    for framing in (b"Content-length: %d\r\n" % len(big), b""):
        got = exchange(port, b"CHECK SPAMC/1.5\r\n" + framing + b"\r\n" + big)
        assert got == b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n", got
    packed = zlib.compress(big)
    got = exchange(port, b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n"
                   % len(packed) + packed)
    assert got == b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n", got
    lines = [line for line in daemon.log().splitlines() if f" size={len(big)} " in line]
    assert len(lines) == 3 and all(" action=skipped " in line for line in lines), lines


@pytest.mark.parametrize(("compressed", "length"), [(False, True), (False, False), (True, True)])
def test_read_body_keeps_only_what_it_is_asked_to(compressed: bool, length: bool) -> None:
    message = b"Subject: s\r\n\r\n" + bytes(range(256)) * 4000   # 1 MB
    wire = zlib.compress(message) if compressed else message
    request = Request("CHECK", (1, 5), length=len(wire) if length else None, compressed=compressed)

    async def read(keep: int | None) -> Body:
        reader = asyncio.StreamReader()
        reader.feed_data(wire)
        reader.feed_eof()
        return await read_body(reader, request, 2_000_000, keep)

    assert asyncio.run(read(1001)) == (message[:1001], len(message))
    assert asyncio.run(read(None)) == (message, len(message))


def test_compressed_bodies(served: tuple[Any, int]) -> None:
    """`Compress: zlib` (spamc -z, aiospamc): Content-length is the compressed size. Debian's
    spamc is built without zlib (no -z in its help); where it has -z, it is run too."""
    _daemon, port = served
    require_spamc()
    usage = subprocess.run([SPAMC, "-h"], capture_output=True, check=False)
    if b"  -z" in usage.stdout + usage.stderr:
        got = spamc(port, HAM, "-z", "-c")
        assert got.returncode == 0 and got.out.endswith(b"/5.0\n"), got
    packed = zlib.compress(HAM)
    got = exchange(port, b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n" % len(packed) + packed)
    assert got.startswith(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; "), got
    got = exchange(port, b"CHECK SPAMC/1.5\r\nCompress: zlib\r\n\r\n" + packed)
    assert got == b"SPAMD/1.0 69 Service Unavailable: Compress requires Content-length header\r\n"
    got = exchange(port, b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: 5\r\n\r\nhello")
    assert got.startswith(b"SPAMD/1.0 69 Service Unavailable: zlib: "), got
    bomb = zlib.compress(b"\0" * 5_000_000)
    got = exchange(port, b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n" % len(bomb) + bomb)
    assert got.startswith(b"SPAMD/1.0 65 Message too large"), got
    got = exchange(port, b"CHECK SPAMC/1.5\r\nCompress: gzip\r\nContent-length: 1\r\n\r\nx")
    assert got == b"SPAMD/1.0 76 Bad header line: (compression type not supported: gzip)\r\n"


@pytest.mark.parametrize("request_bytes, reply", [
    (b"GET / HTTP/1.0\r\n\r\n", b"76 Bad header line: GET / HTTP/1.0"),        # not spamd at all
    (b"CHECK SPAMC/1.5\r\nContent-length: x\r\n\r\n",
     b"76 Bad header line: (Content-Length contains non-numeric bytes)"),
    (b"CHECK SPAMC/1.5\r\nContent-length: 5\r\nnonsense\r\n\r\nhello",
     b"76 Bad header line: (header not in 'Name: value' format)"),
    (b"CHECK SPAMC/1.5\r\nContent-length: 999999999\r\n\r\n", b"65 Message too large"),
    (b"CHECK SPAMC/1.5\r\n" + b"X: y\r\n" * 300 + b"\r\n", b"76 Bad header line: (too many headers)"),
    (b"CHECK SPAMC/1.5\r\n" + b"A" * 100_000 + b"\r\n", b"76 Bad header line: (line too long)"),
    (b"\x00\xff" * 50 + b"\r\n", b"76 Bad header line: ??"),
    (b"CHECK SPAMC/1.5\r\nUser: a\x01b\r\n\r\n", b"76 Bad header line: (User header contains control chars)"),
    (b"CHECK SPAMC/1.5\r\nContent-length: 50\r\n\r\nonly a bit",
     b"76 Bad header line: (Content-Length mismatch: Expected 50 bytes, got 10 bytes)"),
    (b"CHECK SPAMC/1.5\r\nContent-length: 5\r\n", b"76 Bad header line: (EOF during headers)"),
    (b"CHECK SPA", b"76 Bad header line: (closed before headers)"),
])
def test_malformed_requests_get_spamds_errors(served: tuple[Any, int], request_bytes: bytes,
                                              reply: bytes) -> None:
    daemon, port = served
    answer = exchange(port, request_bytes)
    assert answer.startswith(b"SPAMD/1.0 " + reply), answer
    assert answer.endswith(b"\r\n") and answer.count(b"\r\n") == 1
    assert daemon.alive()


def test_vanishing_and_truncating_clients_cost_nothing(served: tuple[Any, int]) -> None:
    daemon, port = served
    for data in (b"", b"CHECK SPA", b"CHECK SPAMC/1.5\r\nContent-length: 500\r\n\r\nonly a bit"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(data)
    # an oversize-for-scoring message is answered, unscored, not refused
    big = HAM + b"x" * 150_000 + b"\r\n"
    answer = exchange(port, b"PROCESS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(big) + big)
    assert b"Spam: False ; 0.0 / 5.0" in answer and b"X-Spam-Status: Skipped" in answer
    assert exchange(port, b"PING SPAMC/1.5\r\n\r\n") == b"SPAMD/1.5 0 PONG\r\n"
    assert daemon.alive() and "Traceback" not in daemon.log()


def test_a_client_that_stalls_gets_spamds_timeout(daemon_factory: Any) -> None:
    daemon = daemon_factory(spamd={"listen": "127.0.0.1:0"}, timeouts={"idle": 1})
    port = frontend_port(daemon, "spamd")
    got = exchange(port, b"CHECK SPAMC/1.5\r\nContent-length: 100\r\n\r\nsome", shut=False)
    assert got == b"SPAMD/1.0 79 Timeout: (1 second socket timeout reading input from client)\r\n"


def test_points_put_the_thresholds_at_fixed_numbers() -> None:
    policy = Policy(0.99, 0.9999)
    assert points(0.99, policy, policy) == pytest.approx(5.0)
    assert points(0.9999, policy, policy) == pytest.approx(10.0)
    assert points(0.01, policy, policy) < points(0.5, policy, policy) < points(0.9, policy, policy) < 5.0
    assert points(1.0, policy, policy) <= 50.0 and points(0.0, policy, policy) >= -50.0


def test_tag_at_null_is_never_spam_for_spamc_or_exim(daemon_factory: Any, spam: bytes) -> None:
    """policy.tag_at: null: filterd never flags, so spamd says Spam: False and a threshold
    no score reaches (Exim's spam = compares the two numbers), while the points stay on
    the model's scale (spam still scores high)."""
    require_spamc()
    daemon = daemon_factory(spamd={"listen": "127.0.0.1:0"}, policy={"tag_at": None})
    port = frontend_port(daemon, "spamd")
    answer = exchange(port, b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(spam) + spam)
    match = re.search(rb"\r\nSpam: (True|False) ; (-?\d+\.\d) / (\d+\.\d)\r\n", answer)
    assert match, answer
    assert match.group(1) == b"False"
    score, threshold = float(match.group(2)), float(match.group(3))
    assert score >= 5.0, "points left the model's scale"
    assert threshold == 1000.0 and score < threshold
    got = spamc(port, spam, "-c")
    assert got.returncode == 0, got                 # spamc -c: 0 = not spam
    assert b"X-Spam-Flag: NO" in spamc(port, spam).out


def test_clients_outside_allowed_networks_are_refused_on_both_listeners(daemon_factory: Any) -> None:
    """allowed_networks holds on the spamd and milter ports as on the SMTP port: a loopback
    client is cut off before a byte of its request is read, and the refusal is logged."""
    daemon = daemon_factory(spamd={"listen": "127.0.0.1:0"}, milter={"listen": "127.0.0.1:0"},
                            allowed_networks=["192.0.2.0/24"])
    assert exchange(frontend_port(daemon, "spamd"), b"PING SPAMC/1.5\r\n\r\n") == b""
    negotiate = b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"
    assert exchange(frontend_port(daemon, "milter"), negotiate) == b""
    refused = [line for line in daemon.log().splitlines() if "refused: not in allowed_networks" in line]
    assert any(" spamd " in line for line in refused) and any(" milter " in line for line in refused), refused
