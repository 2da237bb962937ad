"""A learning store several hosts share: two filterd instances on one real redis-server.

A TELL to one changes the other's score within a second; with Redis down both scan on with
what they hold and TELL answers a temporary failure; once it is back, lessons flow again.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.frontends import require_spamc
from tests.fixtures.learning import points, points_everywhere, spamc_learn, spamd_port
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.prereq import missing, require_module
from tests.fixtures.smtp import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.corpus]

LEARNED = b"Message successfully un/learned\n"


class RedisServer:
    """redis-server on a free loopback port, its data (append-only file) in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.answers, 20, "redis-server to answer")
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed (Debian package redis-server)")
    require_module("redis", "pip install -e '.[redis]'")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_two_instances_share_lessons_and_outlive_a_redis_outage(
        daemon_factory: Any, redis_server: RedisServer, corpus_dir: Path) -> None:
    require_spamc()
    message, other = corpus_messages(corpus_dir, "spam", 2)
    hosts = [daemon_factory(workers=2, spamd={"listen": "127.0.0.1:0", "allow_tell": True},
                            learning={"store": redis_server.url}) for _ in range(2)]
    one, two = (spamd_port(host) for host in hosts)
    shipped = points(two, message)
    assert shipped >= 5.0

    assert spamc_learn(one, message, "ham").out == LEARNED
    taught = time.monotonic()
    wait_until(lambda: max(points_everywhere(two, message, 8)) < 5.0, 1.0, "the other host to learn")
    assert time.monotonic() - taught < 1.0
    learned = points(two, message)

    redis_server.stop()                                   # Redis down
    told = spamc_learn(one, other, "ham")
    assert told.returncode != 0 and not told.out.startswith(b"Message"), told   # try again later
    for port in (one, two):                               # both scan on, with what they hold
        assert points_everywhere(port, message) == {learned}

    redis_server.start()                                  # back, with its append-only file
    wait_until(lambda: spamc_learn(one, other, "ham").out == LEARNED, 10, "TELL to work again")
    wait_until(lambda: max(points_everywhere(two, other, 8)) < 5.0, 1.0, "the next lesson")

    def agreed() -> bool:                     # every worker of both hosts, the same weights
        return len(points_everywhere(one, message, 8) | points_everywhere(two, message, 8)) == 1

    wait_until(agreed, 1.0, "both hosts to agree")
    for host in hosts:
        problems = [p for p in host.problems() if "unreachable" not in p and "TELL not recorded" not in p]
        assert problems == [], problems


def test_a_compacted_redis_journal_gives_every_reader_the_same_bits(
        redis_server: RedisServer, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from filterd.learning import learner as learning
    from filterd.learning.learner import Learner
    from filterd.learning.redisstore import RedisStore
    from filterd.pipeline.scorer import Scorer
    from tests.fixtures.lifecycle import shipped_model

    mail = corpus_messages(corpus_dir, "spam", 6)
    first, second = (Scorer.load(shipped_model(), device="cpu") for _ in range(2))
    writer, reader = Learner(RedisStore(redis_server.url), first), Learner(RedisStore(redis_server.url), second)
    for raw in mail:
        writer.learn(raw, "ham")
    reader.poll()
    monkeypatch.setattr(learning, "COMPACT_SLACK", 0)
    for raw in mail[:4]:                       # churn until the journal is rewritten
        writer.forget(raw)
        writer.learn(raw, "spam")
    assert writer.store.client.get("filterd:learning:generation") is not None
    assert writer.store.client.llen("filterd:learning:journal") <= 2 * len(writer.lessons) + 2
    assert len(writer.store.client.keys("filterd:learning:message:*")) == len(writer.lessons)
    reader.poll()
    assert first.wide_weights.tobytes() == second.wide_weights.tobytes()
    assert reader.lessons == writer.lessons
