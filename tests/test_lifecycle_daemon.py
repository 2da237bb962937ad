"""The daemon's lifecycle, end to end: `filterd serve` as a real subprocess on loopback, a
recording aiosmtpd next hop, a test NOTIFY_SOCKET and the metrics endpoint over HTTP.

Covered: sd_notify order (READY only once the port accepts, RELOADING/READY around a
reload, STOPPING on the way out), reload with a good model, a corrupt model and a broken
config while messages flow (none refused or lost), SIGTERM in the middle of a transaction
(it completes, or gets 421; exit 0), a missing model at start, and metric counts after
traffic, with one process and with two workers.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import urllib.request
import uuid
from typing import BinaryIO
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.clients import Flow, message, send
from tests.fixtures.daemon import Daemon
from tests.fixtures.frontends import frontend_port
from tests.fixtures.lifecycle import NotifyListener, copy_model, corrupt_model, shipped_model
from tests.fixtures.smtp import Sink, wait_until
from tests.fixtures.smtp import greeting as greets

pytestmark = [pytest.mark.slow]   # each test starts filterd and loads the model


@pytest.fixture
def recorder() -> Iterator[Sink]:
    """The next hop: the recording aiosmtpd sink of tests/fixtures/smtp.py."""
    sink = Sink().start()
    yield sink
    sink.stop()


@pytest.fixture
def daemons(tmp_path: Path, recorder: Sink) -> Iterator[list[Daemon]]:
    """Every Daemon a test makes goes in this list; all are stopped afterwards."""
    made: list[Daemon] = []
    yield made
    for daemon in made:
        daemon.stop()


@pytest.fixture
def make(tmp_path: Path, recorder: Sink, daemons: list[Daemon]) -> Callable[..., Daemon]:
    if not (shipped_model() / "manifest.json").exists():
        pytest.fail(f"no model at {shipped_model()}")

    def make(**overrides: object) -> Daemon:
        daemon = Daemon(tmp_path / f"d{len(daemons)}", recorder.port, **overrides)
        daemons.append(daemon)
        return daemon

    return make


def scrape(port: int) -> dict[str, float]:
    """The endpoint's samples as {'name{label="v"}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notify_sequence(make: Callable[..., Daemon], tmp_path: Path, workers: int, kind: str) -> None:
    listener = (NotifyListener(path=tmp_path / "notify.sock") if kind == "path"
                else NotifyListener(abstract=f"filterd-test-{uuid.uuid4().hex}"))
    try:
        daemon = make(workers=workers).start(env={"NOTIFY_SOCKET": listener.address}, wait=False)
        listener.wait_for("READY", alive=daemon.check_alive)
        daemon.wait_ready()   # the port from the log line written just before READY=1
        assert greets(daemon.port).startswith(b"220 ")
        daemon.signal(signal.SIGHUP)
        listener.wait_for("READY", count=2, alive=daemon.check_alive)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        messages = listener.poll()
    finally:
        listener.close()
    states = [next(k for k in m if k != "STATUS" and k != "MONOTONIC_USEC") for m in messages]
    assert states == ["READY", "RELOADING", "READY", "STOPPING"]
    assert daemon.problems() == []
    assert int(messages[1]["MONOTONIC_USEC"]) > 0
    assert "listening on" in messages[0]["STATUS"]


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_while_messages_flow(make: Callable[..., Daemon], recorder: Sink, tmp_path: Path,
                                    workers: int) -> None:
    v2 = copy_model(shipped_model(), tmp_path / "model-v2", version="lifecycle-v2")
    broken = corrupt_model(shipped_model(), tmp_path / "model-broken")
    daemon = make(workers=workers).start()
    flow = Flow(daemon.port).start()
    try:
        wait_until(lambda: len(flow.replies) >= 3, 60, "messages before the reload")
        daemon.write_config(model={"path": str(v2), "device": "cpu"},
                            hostname="reloaded.test.invalid", listen="127.0.0.1:1")
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "reloaded: model lifecycle-v2" in daemon.log(), 60, "the reload")
        assert b" reloaded.test.invalid " in greets(daemon.port)   # applied to new sessions
        assert "reload: listen changed ('127.0.0.1:0' -> '127.0.0.1:1'): restart" in daemon.log()
        seen = len(flow.replies)
        daemon.write_config(model={"path": str(broken), "device": "cpu"})
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in daemon.log(), 60, "the corrupt model refused")
        daemon.write_config(policy={"tag_at": 2})
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: daemon.log().count("reload refused") == 2, 60, "bad config refused")
        wait_until(lambda: len(flow.replies) >= seen + 3, 60, "messages after the reloads")
    finally:
        flow.stop()
    assert flow.errors == []
    assert flow.replies and all(code == 250 for code, _ in flow.replies), flow.replies
    delivered = recorder.wait_for(len(flow.replies))
    assert len(delivered) == len(flow.replies)
    assert "model=lifecycle-v2" in (delivered[-1].header("X-Spam-Status") or "")
    refusals = [line for line in daemon.log().splitlines() if "reload refused" in line]
    assert len(refusals) == 2
    assert "model.path" in refusals[0] and "sha256" in refusals[0]
    assert "policy.tag_at" in refusals[1]
    assert "Traceback" not in daemon.log()


def test_sigterm_mid_transaction_completes_then_exits_0(make: Callable[..., Daemon], recorder: Sink) -> None:
    daemon = make().start()
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as idle, \
            smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        idle.ehlo("idle.test.invalid")
        client.ehlo("client.test.invalid")
        client.mail("alice@example.org")
        client.rcpt("bob@example.org")
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: "stopped accepting" in daemon.log(), 30, "the drain to start")
        code, _ = client.data(message(1))
        assert code == 250
        assert recorder.wait_for(1)[0].header("Subject") == "test message 1"
        assert idle.getreply()[0] == 421        # idle sessions are told, not dropped
        assert client.getreply()[0] == 421      # and so is ours once its transaction ended
    assert daemon.wait() == 0
    with pytest.raises(OSError):
        greets(daemon.port)
    assert daemon.problems() == []


@pytest.mark.parametrize("second_signal", [False, True])
def test_sigterm_stalled_transaction_gets_421(make: Callable[..., Daemon], second_signal: bool) -> None:
    daemon = make(timeouts={"shutdown": 2 if not second_signal else 60}).start()
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test.invalid")
        client.mail("alice@example.org")
        client.rcpt("bob@example.org")
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(b"Subject: stalled\r\n\r\nthe client stops here ")
        daemon.signal(signal.SIGTERM)
        if second_signal:   # the first waits up to 60 s; a second cuts it short
            wait_until(lambda: "stopped accepting" in daemon.log(), 30, "the drain to start")
            daemon.signal(signal.SIGTERM)
        assert client.getreply()[0] == 421
    assert daemon.wait(30) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_missing_model_one_error_line(make: Callable[..., Daemon], tmp_path: Path,
                                      workers: int) -> None:
    daemon = make(workers=workers, model={"path": str(tmp_path / "absent"), "device": "cpu"})
    daemon.start(wait=False)
    assert daemon.wait() != 0
    errors = [line for line in daemon.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "model.path" in errors[0], daemon.log()
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_count_traffic(make: Callable[..., Daemon], recorder: Sink, workers: int) -> None:
    daemon = make(workers=workers, metrics="127.0.0.1:0").start()
    assert daemon.metrics_port
    for n in range(6):
        assert send(daemon.port, n)[0] == 250
    recorder.wait_for(6)
    # The last session may still be closing on the server side when the client is done.
    samples = wait_until(lambda: (s := scrape(daemon.metrics_port))
                         .get("filterd_sessions_in_flight") == 0 and s, 30, "sessions to close")
    handled = sum(v for k, v in samples.items() if k.startswith("filterd_messages_total{"))
    assert handled == 6
    assert samples["filterd_score_count"] == 6
    assert samples["filterd_relay_seconds_count"] == 6
    info = [k for k in samples if k.startswith("filterd_model_info{")]
    assert len(info) == 1 and 'version="' in info[0]
    assert daemon.problems() == []


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def test_dead_worker_is_replaced(make: Callable[..., Daemon], recorder: Sink) -> None:
    daemon = make(workers=2).start()
    assert daemon.proc is not None
    supervisor = daemon.proc.pid
    before = children(supervisor)
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: "starting a new one" in daemon.log(), 30, "the supervisor to notice")
    after = wait_until(lambda: len(c := children(supervisor)) == 2 and victim not in c and c,
                       60, "a new worker")
    assert len(after - before) == 1
    wait_until(lambda: " replaced (pid " in daemon.log(), 60, "the new worker to be ready")
    for n in range(4):
        assert send(daemon.port, n)[0] == 250
    assert len(recorder.wait_for(4)) == 4
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_metrics_port_taken_mail_still_flows(make: Callable[..., Daemon], recorder: Sink) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = make(metrics=f"127.0.0.1:{port}").start()
        assert f"metrics endpoint off: cannot listen on 127.0.0.1:{port}" in daemon.log()
        assert send(daemon.port, 1)[0] == 250
    assert len(recorder.wait_for(1)) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_during_reload(make: Callable[..., Daemon], recorder: Sink, tmp_path: Path,
                              workers: int) -> None:
    listener = NotifyListener(path=tmp_path / "notify.sock")
    try:
        daemon = make(workers=workers).start(env={"NOTIFY_SOCKET": listener.address})
        daemon.signal(signal.SIGHUP)
        listener.wait_for("RELOADING", alive=daemon.check_alive)
        daemon.signal(signal.SIGHUP)   # (sent at once, the kernel would merge the two signals)
        listener.wait_for("READY", count=3, alive=daemon.check_alive)
        states = [next(k for k in m if k not in ("STATUS", "MONOTONIC_USEC"))
                  for m in listener.poll()]
    finally:
        listener.close()
    assert states == ["READY", "RELOADING", "READY", "RELOADING", "READY"]
    assert daemon.log().count("reloaded: model") == 2
    assert daemon.problems() == []
    assert send(daemon.port, 1)[0] == 250
    assert len(recorder.wait_for(1)) == 1


@pytest.mark.parametrize(("choice", "workers", "loop"), [("uvloop", 1, "uvloop"), ("uvloop", 2, "uvloop"),
                                                         ("asyncio", 2, "asyncio")])
def test_event_loop_choice(make: Callable[..., Daemon], recorder: Sink, choice: str,
                           workers: int, loop: str) -> None:
    """`event_loop` picks the loop that serves (the ready line names it); mail flows on both."""
    daemon = make(workers=workers, event_loop=choice).start()
    for n in range(3):
        assert send(daemon.port, n)[0] == 250
    recorder.wait_for(3)
    ready = [line for line in daemon.log().splitlines() if "ready: listening" in line]
    assert ready and ready[-1].endswith(f", {loop} event loop"), ready
    assert daemon.problems() == []


def test_a_burst_of_connections_is_spread_over_the_workers(make: Callable[..., Daemon],
                                                           recorder: Sink) -> None:
    """16 connections that arrive at once (an MTA opening its sessions) are all served, by both
    workers: each worker accepts on its own SO_REUSEPORT socket, and the kernel hashes
    connections over the sockets, so a socket nobody served would leave its share hanging."""
    daemon = make(workers=2).start()
    socks = [socket.create_connection(("127.0.0.1", daemon.port), timeout=60) for _ in range(16)]
    try:
        for n, sock in enumerate(socks):   # all 16 were queued before any session began
            replies: BinaryIO = sock.makefile("rb")
            assert _reply(replies).startswith(b"220")
            for line in (b"EHLO client.test.invalid", b"MAIL FROM:<alice@example.org>",
                         b"RCPT TO:<bob@example.org>"):
                sock.sendall(line + b"\r\n")
                assert _reply(replies).startswith(b"250")
            sock.sendall(b"DATA\r\n")
            assert _reply(replies).startswith(b"354")
            sock.sendall(message(n) + b".\r\n")
            assert _reply(replies).startswith(b"250")
    finally:
        for sock in socks:
            sock.close()
    recorder.wait_for(16)
    lines = [line for line in daemon.log().splitlines() if " action=" in line]
    per_worker = {w: sum(f"worker {w}: " in line for line in lines) for w in (1, 2)}
    assert sum(per_worker.values()) == 16, lines
    assert min(per_worker.values()) >= 2, per_worker


def _reply(replies: BinaryIO) -> bytes:
    """The last line of one (possibly multi-line) SMTP reply."""
    while (line := replies.readline())[3:4] == b"-":
        pass
    return line


@pytest.mark.parametrize("key", ["listen", "spamd"])
@pytest.mark.parametrize("workers", [1, 2])
def test_address_in_use_one_error_line(make: Callable[..., Daemon], key: str, workers: int,
                                       tmp_path: Path) -> None:
    """A listening address another program holds stops filterd with one line naming it,
    leaving nothing behind (the supervisor's metrics directory in $TMPDIR included)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        value: object = address if key == "listen" else {"listen": address}
        daemon = make(workers=workers, **{key: value})
        daemon.start(wait=False, env={"TMPDIR": str(tmp)})
        assert daemon.wait() != 0
    assert list(tmp.glob("filterd-*")) == []
    errors = [line for line in daemon.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"cannot listen on {address}" in errors[0], daemon.log()
    assert f"Address already in use, by pid {os.getpid()} (" in errors[0]   # this test holds it
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize(("key", "workers"), [("listen", 1), ("listen", 2), ("milter", 2), ("spamd", 2)])
def test_second_instance_on_a_taken_address_refuses_to_start(
        make: Callable[..., Daemon], recorder: Sink, key: str, workers: int) -> None:
    """SO_REUSEPORT would let a second filterd join the first one's sockets and take a share
    of its mail: it must refuse to start, naming the first, which keeps getting all mail."""
    first = make(workers=2, milter={"listen": "127.0.0.1:0"}, spamd={"listen": "127.0.0.1:0"}).start()
    assert first.proc is not None
    taken = f"127.0.0.1:{first.port if key == 'listen' else frontend_port(first, key)}"
    second = make(workers=workers, **({"listen": taken} if key == "listen" else {key: {"listen": taken}}))
    second.start(wait=False)
    assert second.wait() != 0
    errors = [line for line in second.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1, second.log()
    assert f"cannot listen on {taken}: [Errno 98] Address already in use, by pid {first.proc.pid} (" \
        in errors[0] and " -m filterd serve -c " in errors[0]
    assert "Traceback" not in second.log() and "ready:" not in second.log()
    for n in range(8):
        assert send(first.port, n)[0] == 250
    assert len(recorder.wait_for(8)) == 8
    assert first.log().count(" frontend=smtp ") == 8 and first.problems() == []
