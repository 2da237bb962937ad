"""The spamd listener with SpamAssassin's own client, spamc, and hostile raw requests.

The real `filterd serve` runs with `spamd: {listen: 127.0.0.1:0}` beside its SMTP port.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from filterd.spamd import points
from filterd.verdict import Policy
from tests.fixtures.frontends import exchange, frontend_port, require_spamc, spamc
from tests.fixtures.postfix import corpus_messages

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
    assert len(names) == 10 and all(re.fullmatch(r"FD_(WORD|CHARS)_[A-Z0-9_]+", n) for n in names), names


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


def test_ping_and_raw_protocol_answers(served: tuple[Any, int]) -> None:
    _daemon, port = served
    assert exchange(port, b"PING SPAMC/1.5\r\n\r\n") == b"SPAMD/1.5 0 PONG\r\n"
    answer = exchange(port, b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(HAM) + HAM)
    assert re.fullmatch(rb"SPAMD/1\.5 0 EX_OK\r\nSpam: False ; -?\d+\.\d / 5\.0\r\n\r\n", answer), answer
    headers = exchange(port, b"HEADERS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(HAM) + HAM)
    ham_head = HAM.split(b"\r\n\r\n")[0].split(b"\r\n", 2)[2]
    assert b"\r\nContent-length: " in headers and headers.endswith(ham_head + b"\r\n\r\n")


@pytest.mark.parametrize("request_bytes, code", [
    (b"GET / HTTP/1.0\r\n\r\n", b"76"),                                   # not spamd at all
    (b"CHECK SPAMC/1.5\r\n\r\nhello", b"76"),                             # no Content-length
    (b"CHECK SPAMC/1.5\r\nContent-length: x\r\n\r\n", b"76"),
    (b"CHECK SPAMC/1.5\r\nContent-length: 5\r\nnonsense\r\n\r\nhello", b"76"),
    (b"CHECK SPAMC/1.5\r\nContent-length: 999999999\r\n\r\n", b"65"),     # over max_message_size
    (b"CHECK SPAMC/1.5\r\n" + b"X: y\r\n" * 40 + b"\r\n", b"76"),
    (b"CHECK SPAMC/1.5\r\n" + b"A" * 100_000 + b"\r\n", b"76"),
    (b"\x00\xff" * 50 + b"\r\n", b"76"),
])
def test_malformed_requests_get_a_protocol_error(served: tuple[Any, int], request_bytes: bytes,
                                                 code: bytes) -> None:
    daemon, port = served
    answer = exchange(port, request_bytes)
    assert answer.startswith(b"SPAMD/1.5 " + code + b" "), answer
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
