"""A burst of TELLs (a user who files 500 messages at once) against two real workers: scans
keep being answered meanwhile, memory stays bounded, and a SIGKILL of every filterd process
in the middle of it loses none of the lessons that were acknowledged (DidSet).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.frontends import exchange
from tests.fixtures.learning import points, spamd_port
from tests.fixtures.postfix import corpus_messages

pytestmark = [pytest.mark.slow, pytest.mark.corpus]


def tell(port: int, message: bytes, label: str) -> bool:
    """One TELL; True when it was acknowledged as learned (DidSet)."""
    try:
        answer = exchange(port, b"TELL SPAMC/1.5\r\nMessage-class: %s\r\nSet: local\r\n"
                          b"Content-length: %d\r\n\r\n" % (label.encode(), len(message)) + message)
    except OSError:
        return False
    return b"DidSet: local" in answer


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def workers(daemon: Any) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(daemon.proc.pid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


@pytest.fixture(scope="module")
def mail(corpus_dir: Path) -> list[bytes]:
    return corpus_messages(corpus_dir, "easy_ham", 500)


def test_a_burst_of_500_tells_never_stalls_scans_nor_grows_memory(daemon_factory: Any, tmp_path: Path,
                                                                mail: list[bytes]) -> None:
    daemon = daemon_factory(workers=2, spamd={"listen": "127.0.0.1:0", "allow_tell": True},
                            learning={"store": str(tmp_path / "store")})
    port = spamd_port(daemon)
    probe = mail[0]
    points(port, probe)
    before = rss_kb(workers(daemon))
    waits: list[float] = []
    done = threading.Event()

    def scan_meanwhile() -> None:
        while not done.is_set():
            start = time.monotonic()
            points(port, probe)
            waits.append(time.monotonic() - start)

    scanner = threading.Thread(target=scan_meanwhile)
    scanner.start()
    try:
        with ThreadPoolExecutor(32) as pool:
            told = list(pool.map(lambda raw: tell(port, raw, "spam"), mail))
    finally:
        done.set()
        scanner.join()
    assert sum(told) >= 490, sum(told)        # a few duplicate messages in the corpus
    assert len(waits) >= 5 and max(waits) < 2.0, (len(waits), max(waits))
    grown = rss_kb(workers(daemon)) - before
    assert grown < 64 * 1024, f"workers grew by {grown} KB"   # 12 MB of delta each, a lesson table
    assert daemon.problems() == []


def test_sigkill_of_every_process_mid_burst_keeps_the_acknowledged(daemon_factory: Any, tmp_path: Path,
                                                                  mail: list[bytes]) -> None:
    daemon = daemon_factory(workers=2, spamd={"listen": "127.0.0.1:0", "allow_tell": True},
                            learning={"store": str(tmp_path / "store")})
    port = spamd_port(daemon)
    acknowledged: list[bytes] = []

    def teach(raw: bytes) -> None:
        if tell(port, raw, "ham"):
            acknowledged.append(raw)

    journal = tmp_path / "store" / "journal"

    def kill_all() -> None:
        while not journal.exists() or journal.read_bytes().count(b"\n") < 50:
            time.sleep(0.005)
        for pid in workers(daemon):
            subprocess.run(["kill", "-KILL", str(pid)], check=False)
        daemon.signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_all)
    killer.start()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(teach, mail))
    killer.join()
    daemon.wait()
    assert 0 < len(acknowledged) < 450, len(acknowledged)     # killed in the middle
    daemon.start()
    port = spamd_port(daemon)
    again = [tell(port, raw, "ham") for raw in acknowledged]
    assert not any(again), f"{sum(again)} acknowledged lessons were lost"
