"""Two filterd instances sharing one process-limited re-injection smtpd, against a real Postfix.

The setting of issue 13: Postfix's re-injection smtpd has `maxproc` 10, and both an
after-queue filterd (FILTER_README) and a before-queue one (SMTPD_PROXY_README) relay into
it. A burst through the after-queue filterd may take all 10 processes; once it is over,
filterd must give them back (QUIT after `relay.idle_timeout`), so that the before-queue
filterd can relay within a few seconds, and Postfix must see every one of filterd's
sessions end with QUIT, never with `timeout after ...`.

    smtp-source -> smtpd :A (content_filter) -> queue -> filterd :F1 --\\
                                                                        > smtpd :R (maxproc 10)
    swaks -> smtpd :B (smtpd_proxy_filter) -> filterd :F2 ------------/    -> queue -> sink
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.daemon import Daemon
from tests.fixtures.lifecycle import require_model
from tests.fixtures.postfix import REINJECT, SERVICES, PostfixInstance, require_postfix, swaks
from tests.fixtures.smtp import Sink, free_port, wait_until
from tests.test_lifecycle_daemon import scrape

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

MAXPROC = 10   # the re-injection smtpd's process limit, and the filterd transport's
BURST = 40
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
REINJECT_LOG = "postfix/reinject/smtpd"


@dataclass
class SharedPostfix(PostfixInstance):
    """`smtp_port` feeds the after-queue filterd, `before_port` the before-queue one."""

    proxy_port: int = 0
    before_port: int = field(default_factory=free_port)

    def main_cf(self) -> str:
        # Full concurrency into filterd from the first delivery, so the burst is a burst.
        return super().main_cf() + f"filterd_initial_destination_concurrency = {MAXPROC}\n"

    def master_cf(self) -> str:
        options = REINJECT.split("\n", 1)[1]
        return (
            f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd\n"
            f"    -o content_filter=filterd:[127.0.0.1]:{self.filterd_port}\n"
            f"filterd   unix  -       -       n       -       {MAXPROC}      smtp\n"
            "    -o smtp_send_xforward_command=yes\n"
            f"127.0.0.1:{self.before_port} inet n - n - - smtpd\n"
            f"    -o smtpd_proxy_filter=127.0.0.1:{self.proxy_port}\n"
            f"127.0.0.1:{self.reinject_port} inet n  -       n       -       {MAXPROC}      smtpd\n"
            "    -o syslog_name=postfix/reinject\n" + options + SERVICES
        )


@dataclass
class Shared:
    postfix: SharedPostfix
    sink: Sink
    after: Daemon
    before: Daemon


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    require_postfix()
    require_model()
    stops = []
    try:
        sink = Sink().start()
        stops.append(sink.stop)
        postfix = SharedPostfix("after", filterd_port=free_port(), sink_port=sink.port,
                                proxy_port=free_port())
        stops.append(postfix.stop)
        postfix.start()
        # The after-queue filterd may pool as many connections as the port has processes
        # (more than the rule in config.yaml allows, so that only the idle limit saves us),
        # and each delivery waits 200 ms for its batch, so the burst's deliveries overlap.
        after = Daemon(tmp_path_factory.mktemp("after"), postfix.reinject_port,
                       listen=f"127.0.0.1:{postfix.filterd_port}", metrics="127.0.0.1:0",
                       relay={"pool_size": MAXPROC}, scoring={"max_wait_ms": 200})
        stops.append(after.stop)
        after.start()
        before = Daemon(tmp_path_factory.mktemp("before"), postfix.reinject_port,
                        listen=f"127.0.0.1:{postfix.proxy_port}")
        stops.append(before.stop)
        before.start()
        yield Shared(postfix, sink, after, before)
    finally:
        for stop in reversed(stops):
            stop()


def relayed(daemon: Daemon) -> float:
    samples = scrape(daemon.metrics_port)
    return sum(v for k, v in samples.items() if k.startswith("filterd_messages_total{"))


class Peak:
    """The most next-hop connections the daemon had open, sampled from its metrics."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon, self.value, self._stop = daemon, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                sample = scrape(self.daemon.metrics_port)["filterd_next_hop_connections"]
            except OSError:   # a busy moment; the next sample will do
                continue
            self.value = max(self.value, sample)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(10)
        return self.value


def sessions(maillog: str, what: str) -> list[str]:
    """The re-injection smtpd's log lines that say `what`."""
    return [line for line in maillog.splitlines() if f"{REINJECT_LOG}[" in line and f": {what} " in line]


def test_after_a_burst_the_other_filter_still_relays(shared: Shared, tmp_path: Path) -> None:
    peak = Peak(shared.after)
    subprocess.run(
        [SMTP_SOURCE, "-s", "20", "-m", str(BURST), "-l", "2000", "-f", "load@example.org",
         "-t", "burst@example.com", "-M", "client.test.invalid",
         f"127.0.0.1:{shared.postfix.smtp_port}"],
        check=True, timeout=120, capture_output=True,
    )
    wait_until(lambda: relayed(shared.after) >= BURST, 120, "the burst through filterd", interval=0.05)
    held = peak.stop()
    assert held == MAXPROC, f"the burst held {held} re-injection processes, not all: this proves nothing"

    message = (b"From: a@example.org\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
               b"Message-ID: <after-burst@example.org>\r\nSubject: right after\r\n\r\nhi\r\n")
    started = time.monotonic()
    result = swaks(shared.postfix.before_port, message, tmp_path, to="later@example.com")
    took = time.monotonic() - started
    assert result.data_reply().startswith("250"), result.transcript
    assert took < 6, f"the before-queue filterd waited {took:.1f}s for the re-injection smtpd"

    wait_until(lambda: len(shared.sink.messages) >= BURST + 1, 120, "everything at the sink")
    shared.postfix.wait_empty()
    # Every session of either filterd with the re-injection smtpd ends, with QUIT.
    log = wait_until(lambda: (m := shared.postfix.maillog()) and
                     len(sessions(m, "disconnect from")) == len(sessions(m, "connect from")) and m,
                     30, "filterd to close its re-injection sessions")
    ends = sessions(log, "disconnect from")
    assert ends and all(re.search(r" quit=1 ", line) for line in ends), ends
    assert "timeout after" not in log
    assert sessions(log, "lost connection after") == []   # the fixture's own probes hit smtpd :A
    assert shared.after.problems() == [] and shared.before.problems() == []
