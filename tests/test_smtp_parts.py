"""The SMTP path's parts on their own: headers.py, relay.stuff, the batcher, the real daemon."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import REGISTRY

from filterd.batcher import Batcher, runs_on_loop
from filterd.verdict import Edits, Verdict, apply, format_score, header_end
from filterd.frontends.smtp.relay import stuffed
from tests.fixtures.clients import ours_and_rest

SPAMMY = Verdict("Yes", 0.9731, 0.4, 0.95, "m-1")


def render(verdict: Verdict) -> bytes:
    """Our header block alone: the edits applied to an empty message."""
    return apply(b"", Edits.of(verdict))


def tag(message: bytes, verdict: Verdict, subject_prefix: str | None = None) -> bytes:
    return apply(message, Edits.of(verdict, subject_prefix))


@pytest.mark.parametrize(("message", "expected"), [
    (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", 12),
    (b"A: 1\n\nbody\n", 5),
    (b"\r\nbody only\r\n", 0),
    (b"A: 1\r\nB: 2\r\n", 12),          # no body at all
    (b"", 0),
])
def test_header_end(message: bytes, expected: int) -> None:
    assert header_end(message) == expected


def test_render_formats_scores_and_thresholds() -> None:
    assert render(SPAMMY) == (b"X-Spam-Flag: YES\r\nX-Spam-Score: 0.9731\r\n"
                              b"X-Spam-Status: Yes, score=0.9731 tag=0.400 reject=0.950 model=m-1\r\n")
    assert render(Verdict("No", 0.1, 0.4, None, "a b")).endswith(
        b"score=0.100 tag=0.400 reject=none model=a_b\r\n")
    assert render(Verdict("Skipped")) == b"X-Spam-Flag: NO\r\nX-Spam-Status: Skipped\r\n"


@pytest.mark.parametrize(("score", "text"), [
    (0.973, "0.973"), (0.1, "0.100"), (0.0, "0.000"), (1.0, "1.000"),
    (0.99995, "0.99995"), (0.9999996, "1.000"), (0.12345678, "0.123457"),
])
def test_format_score_keeps_what_tells_a_score_from_a_threshold(score: float, text: str) -> None:
    assert format_score(score) == text


def test_tag_renames_only_header_fields_of_the_header_section() -> None:
    message = (b"Received: from x\r\n\tby y; X-Spam-Flag: in a folded line\r\n"
               b"X-SPAM-LEVEL: *****\r\nX-Spam-Untrusted-Flag: kept as is\r\n"
               b"X-Spammer: not ours\r\n\r\nX-Spam-Flag: YES\r\n")
    out = tag(message, SPAMMY)
    assert out == render(SPAMMY) + (
        b"Received: from x\r\n\tby y; X-Spam-Flag: in a folded line\r\n"
        b"X-Spam-Untrusted-LEVEL: *****\r\nX-Spam-Untrusted-Flag: kept as is\r\n"
        b"X-Spammer: not ours\r\n\r\nX-Spam-Flag: YES\r\n")


def test_tag_leaves_the_message_object_alone_when_nothing_is_forged() -> None:
    message = b"Subject: hi\r\n\r\n" + b"x" * 100
    assert tag(message, SPAMMY) == render(SPAMMY) + message


@pytest.mark.parametrize(("message", "expected"), [
    (b"Subject: offer\r\n\r\nb\r\n", b"Subject: [SPAM] offer\r\n\r\nb\r\n"),
    (b"subject:offer\r\n\r\nb\r\n", b"subject:[SPAM] offer\r\n\r\nb\r\n"),
    (b"Subject: [SPAM] offer\r\n\r\nb\r\n", b"Subject: [SPAM] offer\r\n\r\nb\r\n"),
    (b"Subject:\toffer\r\n\r\nb\r\n", b"Subject:\t[SPAM] offer\r\n\r\nb\r\n"),
    (b"From: a\r\n\r\nb\r\n", b"Subject: [SPAM]\r\nFrom: a\r\n\r\nb\r\n"),
])
def test_subject_prefix(message: bytes, expected: bytes) -> None:
    assert tag(message, SPAMMY, "[SPAM] ") == render(SPAMMY) + expected
    assert tag(message, Verdict("No", 0.1, 0.4, None, "m"), "[SPAM] ").endswith(message)


@pytest.mark.parametrize(("message", "expected"), [
    (b".a\r\n..b\r\nc.\r\n", b"..a\r\n...b\r\nc.\r\n"),
    (b"x\r\n.\r\n", b"x\r\n..\r\n"),
    (b"bare\n.lf\r\n", b"bare\n.lf\r\n"),      # aiosmtpd only unstuffs after CRLF
    (b"no final newline", b"no final newline\r\n"),
    (b"", b""),
])
def test_stuff(message: bytes, expected: bytes) -> None:
    assert b"".join(stuffed(b"", message)) == expected
    # Any seam between our header lines and the body, and any body offset, gives the same bytes.
    for cut in range(len(message) + 1):
        assert b"".join(stuffed(message[:cut], message, cut)) == expected
        assert b"".join(stuffed(b"", b"junk" + message, 4)) == expected


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])
def test_batcher_batches_concurrent_messages_and_matches_direct_scores(scorer: Any, on_loop: bool) -> None:
    messages = [b"Subject: m%d\r\n\r\n%s\r\n" % (i, b"word " * (i * 7 + 1)) for i in range(40)]
    sizes: list[int] = []

    class Counting:
        version, thresholds, prepare = scorer.version, scorer.thresholds, scorer.prepare

        def infer(self, batch: Any) -> list[float]:
            sizes.append(len(batch))
            return list(scorer.infer(batch))

    async def run() -> list[float]:
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(Counting(), max_batch=16, max_wait_ms=20, executor=executor,
                              on_loop=on_loop)
            await batcher.start()
            try:
                return await asyncio.gather(*(batcher.score(m) for m in messages))
            finally:
                await batcher.stop()

    got = asyncio.run(run())
    assert got == pytest.approx(scorer.score(messages), abs=1e-5)
    assert sum(sizes) == len(messages)
    assert max(sizes) == 16 and len(sizes) < len(messages)


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])
def test_batcher_survives_cancelled_callers(scorer: Any, on_loop: bool) -> None:
    async def run() -> float:
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(scorer, max_batch=8, max_wait_ms=50, executor=executor, on_loop=on_loop)
            await batcher.start()
            doomed = asyncio.ensure_future(batcher.score(b"Subject: a\r\n\r\nb\r\n"))
            await asyncio.sleep(0)
            doomed.cancel()
            score = await asyncio.wait_for(batcher.score(b"Subject: c\r\n\r\nd\r\n"), 30)
            await batcher.stop()
            return score

    assert 0.0 <= asyncio.run(run()) <= 1.0


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_one_info_line_and_metrics_per_message(filterd: Any, sink: Any, caplog: Any) -> None:
    caplog.set_level("INFO", logger="filterd.scan")
    before = {a: counted("filterd_messages_total", frontend="smtp", action=a) for a in ("ham", "tagged")}
    relayed = counted("filterd_relay_seconds_count")
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        client.sendmail("alice@example.org", ["a@example.org", "b@example.org"],
                        b"Subject: hi\r\n\r\nhello\r\n")
    flag = ours_and_rest(sink.wait_for(1)[0].data)[0]["X-Spam-Flag"]
    lines = [r.getMessage() for r in caplog.records if r.name == "filterd.scan"]
    assert len(lines) == 1
    line = lines[0]
    for part in ("frontend=smtp", "client=127.0.0.1", "from=<alice@example.org>", "rcpts=2", "size=22",
                 "scoring_ms=", "relay_ms=", "reply='250 2.0.0 Ok: queued as SINK1'"):
        assert part in line, line
    assert re.search(r" score=(0\.\d{3,6}|1\.000) ", line), line  # whatever the model thinks of it
    # The action must agree with the verdict the relayed message carries (either can be wrong).
    action = {"YES": "tagged", "NO": "ham"}[flag]
    assert f" action={action} " in line, (flag, line)
    assert counted("filterd_messages_total", frontend="smtp", action=action) == before[action] + 1
    assert counted("filterd_relay_seconds_count") == relayed + 1


@pytest.mark.slow
def test_the_real_daemon_relays_and_tags(filterd_serve: Any, sink: Any) -> None:
    daemon = filterd_serve()
    message = b"Subject: through the real daemon\r\n\r\nhello\r\n"
    with smtplib.SMTP(daemon.host, daemon.port, timeout=60) as client:
        assert client.sendmail("a@example.org", ["b@example.org"], message) == {}
    ours, rest = ours_and_rest(sink.wait_for(1)[0].data)
    assert rest == message
    assert ours["X-Spam-Flag"] in ("YES", "NO")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 30
    assert "client=127.0.0.1" in daemon.log()


@pytest.mark.parametrize(("peer", "allowed", "trusted"), [
    (("127.0.0.1", 2525), True, True),
    (("::ffff:127.0.0.1", 2525, 0, 0), True, True),    # IPv4-mapped: checked as IPv4
    (("192.0.2.7", 2525), True, False),
    (("fe80::1%eth0", 2525, 0, 2), False, False),      # scope id dropped, then outside both
    ("/run/filterd.sock", False, False),               # a UNIX socket: never an IP network
])
def test_peer_network_membership(peer: Any, allowed: bool, trusted: bool) -> None:
    from filterd.hostport import in_networks, networks, peer_address

    address = peer_address(peer)
    assert in_networks(address, networks(["127.0.0.0/8", "192.0.2.0/24"])) is allowed
    assert in_networks(address, networks(["127.0.0.0/8", "::1/128"])) is trusted


def test_batches_run_on_the_loop_on_cpu_and_in_a_thread_on_cuda() -> None:
    class OnCuda:
        provider = "CUDAExecutionProvider"

    class OnCpu:
        provider = "CPUExecutionProvider"

    assert runs_on_loop("auto", OnCpu()) and not runs_on_loop("auto", OnCuda())
    assert runs_on_loop("loop", OnCuda()) and not runs_on_loop("thread", OnCpu())


def test_greeting_name_is_looked_up_off_the_loop_at_start_and_reload(
        make_filterd: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """hostname: null asks socket.getfqdn, which may wait on DNS: never on the event loop."""
    real, threads = socket.getfqdn, []

    def recording(name: str = "") -> str:
        threads.append(threading.current_thread())
        return real(name)

    monkeypatch.setattr(socket, "getfqdn", recording)
    fd = make_filterd()                              # writes filterd0.yaml, hostname: null
    fd.daemon.config_path = str(tmp_path / "filterd0.yaml")
    fd.run(fd.daemon.reload())
    loop_thread = fd.run(_current_thread())
    assert len(threads) == 2 and loop_thread not in threads, (threads, loop_thread)


async def _current_thread() -> threading.Thread:
    return threading.current_thread()
