"""Clients that stall and clients that crowd: the idle timeout frees a slot, and beyond
`max_connections` new clients get 421 while the daemon keeps serving the rest."""

from __future__ import annotations

import socket

import pytest

from tests.fixtures.clients import RawSession, our_headers_then, smtp_send
from tests.fixtures.daemon import Daemon

pytestmark = [pytest.mark.slow]

MESSAGE = (b"From: a@example.org\r\nTo: rcpt@example.com\r\nSubject: crowd\r\n"
           b"Message-ID: <crowd@example.org>\r\n\r\nhello\r\n")


@pytest.mark.parametrize("stall", ["after-greeting", "mid-data"])
def test_stalled_client_is_dropped_and_frees_its_slot(daemon_factory, stall: str) -> None:
    daemon: Daemon = daemon_factory(max_connections=1, timeouts={"idle": 2})
    with RawSession(daemon.port) as staller:
        assert staller.greeting.startswith("220")
        if stall == "mid-data":
            assert staller.command(b"EHLO client.test.invalid").startswith("250")
            assert staller.command(b"MAIL FROM:<a@example.org>").startswith("250")
            assert staller.command(b"RCPT TO:<rcpt@example.com>").startswith("250")
            assert staller.command(b"DATA").startswith("354")
            staller.send(b"Subject: half a message\r\n\r\nand then nothing")
        with RawSession(daemon.port) as second:  # the only slot is taken
            assert second.greeting.startswith("421"), second.greeting
        closing = staller.reply()  # blocks until the idle timeout fires
        assert closing.startswith("421"), closing
        assert staller.reply() == ""  # and the connection is closed
    assert smtp_send(daemon.port, MESSAGE).code == 250  # the slot is free again
    (got,) = daemon.next_hop.wait_for(1)
    our_headers_then(MESSAGE, got.data)  # the half message was never relayed
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def test_five_hundred_connections_at_once(daemon_factory) -> None:
    limit = 50
    daemon: Daemon = daemon_factory(max_connections=limit)
    sockets = [socket.create_connection(("127.0.0.1", daemon.port), timeout=60)
               for _ in range(500)]
    try:
        greetings = [sock.makefile("rb").readline()[:3] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    assert greetings.count(b"220") == limit, {g: greetings.count(g) for g in set(greetings)}
    assert greetings.count(b"421") == 500 - limit
    assert daemon.healthy(), daemon.log()[-3000:]
    outcome = smtp_send(daemon.port, MESSAGE)  # the slots were all given back
    assert outcome.code == 250, outcome
    (got,) = daemon.next_hop.wait_for(1)
    our_headers_then(MESSAGE, got.data)
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]
