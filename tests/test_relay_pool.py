"""The next-hop pool, end to end: `filterd serve` in front of the recording aiosmtpd sink,
its metrics endpoint over HTTP.

Idle pooled connections must go back to the next hop on time, with QUIT: each holds one of
the next hop's smtpd processes (issue 13). Checked here: three connections in use, then
idle, then QUIT after `relay.idle_timeout` (the default, 2 s), with the open/idle gauges
following, summed over two workers too; and a reload or a stop QUITs them at once.
"""

from __future__ import annotations

import signal
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from filterd.config import RelayConfig
from tests.fixtures.clients import message, send
from tests.fixtures.daemon import Daemon
from tests.fixtures.lifecycle import require_model
from tests.fixtures.smtp import Sink, wait_until
from tests.test_lifecycle_daemon import scrape

pytestmark = [pytest.mark.slow]   # each test starts filterd and loads the model

OPEN, IDLE = "filterd_next_hop_connections", "filterd_next_hop_idle_connections"


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[Daemon, Sink]]]:
    """A started Daemon and the Sink it relays to; both stopped at the end."""
    stops: list[Callable[[], object]] = []

    def make(**overrides: object) -> tuple[Daemon, Sink]:
        require_model()
        sink = Sink().start()
        stops.append(sink.stop)
        daemon = Daemon(tmp_path / f"d{len(stops)}", sink.port, sink=sink, **overrides)
        stops.append(daemon.stop)
        return daemon.start(), sink

    yield make
    for stop in reversed(stops):
        stop()


def gauges(daemon: Daemon) -> tuple[float, float]:
    samples = scrape(daemon.metrics_port)
    return samples[OPEN], samples[IDLE]


def open_transactions(port: int, count: int) -> list[smtplib.SMTP]:
    """`count` clients each past RCPT: filterd holds one next-hop connection for each."""
    clients = []
    for _ in range(count):
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        client.ehlo("client.test.invalid")
        assert client.mail("alice@example.org")[0] == 250
        assert client.rcpt("bob@example.org")[0] == 250
        clients.append(client)
    return clients


@pytest.mark.parametrize("workers", [1, 2])
def test_idle_connections_get_quit_after_the_idle_limit(
        make: Callable[..., tuple[Daemon, Sink]], workers: int) -> None:
    limit = RelayConfig().idle_timeout
    assert limit == 2.0   # as Postfix's smtp_connection_cache_time_limit
    daemon, sink = make(workers=workers, metrics="127.0.0.1:0")
    clients = open_transactions(daemon.port, 3)
    assert sink.connections == 3
    assert gauges(daemon) == (3, 0)
    released = time.monotonic()
    for n, client in enumerate(clients):
        assert client.data(message(n))[0] == 250
    done = time.monotonic()
    assert gauges(daemon) == (3, 3)   # all three back in the pool (well within 2 s)
    for client in clients:
        client.quit()
    wait_until(lambda: len(sink.quits) == 3, limit + 10, "three QUITs at the next hop",
               interval=0.05)
    assert min(sink.quits) >= released + limit - 0.05, "QUIT before the idle limit"
    assert max(sink.quits) <= done + limit + 1.5, "QUIT late: the reaper did not run on time"
    assert gauges(daemon) == (0, 0)
    # The pool is still there: the next message opens a fresh connection, which goes idle.
    assert send(daemon.port, 9)[0] == 250
    assert sink.connections == 4
    assert gauges(daemon) == (1, 1)
    assert daemon.problems() == []


def test_reload_and_stop_quit_idle_connections_at_once(
        make: Callable[..., tuple[Daemon, Sink]]) -> None:
    daemon, sink = make(metrics="127.0.0.1:0", relay={"idle_timeout": 120})
    assert send(daemon.port, 1)[0] == 250
    assert gauges(daemon) == (1, 1)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: len(sink.quits) == 1, 30, "the reload to QUIT the idle connection")
    wait_until(lambda: gauges(daemon) == (0, 0), 10, "the gauges to say so")
    assert send(daemon.port, 2)[0] == 250
    assert gauges(daemon) == (1, 1)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert len(sink.quits) == 2, "the drain did not QUIT the idle connection"
    assert sink.connections == 2
    assert daemon.problems() == []
