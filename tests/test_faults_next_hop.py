"""Next-hop faults: filterd answers 4xx so the sending MTA keeps the message, and stays up.

The next hop refuses connections, hangs up mid-transaction, or answers after filterd's
timeout; in each case the client must never see a 250 for mail the next hop did not take,
and once the next hop behaves again the same message goes through.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.fixtures.clients import our_headers_then, smtp_send
from tests.fixtures.daemon import Daemon
from tests.fixtures.smtp import Sink as NextHop
from tests.fixtures.smtp import free_port

pytestmark = [pytest.mark.slow]

MESSAGE = (b"From: a@example.org\r\nTo: rcpt@example.com\r\nSubject: faults\r\n"
           b"Message-ID: <faults@example.org>\r\n\r\nplease do not lose me\r\n")


@pytest.fixture(scope="module")
def daemon(daemon_factory) -> Daemon:
    return daemon_factory(timeouts={"next_hop": 3, "next_hop_connect": 3})


@pytest.fixture
def hop(daemon: Daemon) -> Iterator[NextHop]:
    daemon.next_hop.received.clear()
    daemon.next_hop.behave()
    yield daemon.next_hop
    daemon.next_hop.behave()
    assert daemon.healthy(), daemon.log()[-3000:]
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def assert_tempfail_then_delivered(daemon: Daemon, hop: NextHop) -> None:
    outcome = smtp_send(daemon.port, MESSAGE)
    assert 400 <= outcome.code < 500, outcome  # the MTA keeps the message and retries
    assert daemon.healthy(), daemon.log()[-3000:]
    hop.behave()
    hop.received.clear()
    retry = smtp_send(daemon.port, MESSAGE)
    assert retry.code == 250, retry
    (got,) = hop.wait_for(1)
    our_headers_then(MESSAGE, got.data)


def test_next_hop_refusing_connections(daemon_factory) -> None:
    nothing_there = free_port()
    lonely = daemon_factory(next_hop=f"127.0.0.1:{nothing_there}")
    outcome = smtp_send(lonely.port, MESSAGE)
    assert outcome.code == 451, outcome
    assert outcome.text.startswith("4.4."), outcome
    assert lonely.healthy(), lonely.log()[-3000:]
    assert lonely.next_hop.received == []


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
def test_next_hop_hangs_up_mid_transaction(daemon: Daemon, hop: NextHop, stage: str) -> None:
    hop.behave(drop=stage)
    assert_tempfail_then_delivered(daemon, hop)


def test_next_hop_answering_after_the_timeout(daemon: Daemon, hop: NextHop) -> None:
    hop.behave(delay=8.0)  # timeouts.next_hop is 3 s
    outcome = smtp_send(daemon.port, MESSAGE)
    assert outcome.code == 451, outcome
    assert outcome.text.startswith("4.4.2"), outcome
    assert daemon.healthy()
    # A slow next hop might still take that copy when it wakes up (SMTP's known duplicate,
    # RFC 1047); what matters is that the client was told to retry, and the retry works.
    hop.behave()
    retry = smtp_send(daemon.port, MESSAGE)
    assert retry.code == 250, retry
    got = hop.wait_for(1)[-1]
    our_headers_then(MESSAGE, got.data)


@pytest.mark.parametrize("reply", ["421 4.3.2 going away", "452 4.3.1 out of space"])
def test_next_hop_temporary_failure_at_data_is_passed_on_as_4xx(
    daemon: Daemon, hop: NextHop, reply: str
) -> None:
    hop.behave(data=reply)
    assert_tempfail_then_delivered(daemon, hop)


def test_next_hop_that_never_greets(daemon_factory) -> None:
    """The next hop takes the TCP connection but never says 220 (a hung MTA)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever answers
        port = silent.getsockname()[1]
        mute = daemon_factory(next_hop=f"127.0.0.1:{port}",
                              timeouts={"next_hop_connect": 2, "next_hop": 4})
        outcome = smtp_send(mute.port, MESSAGE)
        assert outcome.code == 451, outcome
        assert mute.healthy(), mute.log()[-3000:]
