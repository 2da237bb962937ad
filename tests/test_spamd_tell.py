"""spamd TELL, the protocol side: `spamc -L spam|ham|forget` against the spamd listener.

The service's own Daemon runs in-process with a small real learning engine handed over
where the service hands its own (`spamd_with`, tests/fixtures/frontends.py); filterd's own
engine and its end-to-end tests are filterd/learning/'s.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.frontends import SPAMC, DictTeacher, Spamc, exchange, frontend_port, require_spamc
from tests.fixtures.smtp import InProcessFilterd, Sink, wait_until, write_config
from tests.test_frontend_spamd import HAM

pytestmark = [pytest.mark.slow]

MESSAGE = (b"From: Mallory <m@example.net>\r\nTo: b@example.com\r\nSubject: cheap pills\r\n"
           b"Message-ID: <tell-1@example.net>\r\n\r\nBuy now, best prices, click here.\r\n")
OFF = b"SPAMD/1.0 69 Service Unavailable: TELL commands are not enabled, set the --allow-tell switch.\r\n"


def learn(port: int, how: str, *args: str, flag: str = "-L") -> Spamc:
    """spamc -L as Dovecot's IMAPSieve recipe runs it (no -x: spamc's own exit codes)."""
    result = subprocess.run([SPAMC, "-d", "127.0.0.1", "-p", str(port), flag, how, *args],
                            input=MESSAGE, capture_output=True, timeout=60, check=False)
    return Spamc(result.returncode, result.stdout + result.stderr)


def test_spamc_learns_relearns_and_forgets(spamd_with: Callable[..., tuple[int, DictTeacher]]) -> None:
    require_spamc()
    port, teacher = spamd_with(allow_tell=True)
    learned, already = b"Message successfully un/learned\n", b"Message was already un/learned\n"
    key = (pwd.getpwuid(os.getuid()).pw_name, hashlib.sha256(MESSAGE).hexdigest())  # spamc sends User:
    assert learn(port, "spam") == Spamc(0, learned)
    assert teacher.lessons == {key: "spam"}
    assert learn(port, "spam") == Spamc(0, already)        # nothing changed: no DidSet
    assert learn(port, "ham") == Spamc(0, learned) and teacher.lessons == {key: "ham"}
    assert learn(port, "forget") == Spamc(0, learned) and teacher.lessons == {}
    assert learn(port, "forget") == Spamc(0, already)
    assert learn(port, "spam", "-u", "alice") == Spamc(0, learned)
    assert teacher.lessons == {("alice", key[1]): "spam"}


def test_spamc_report_and_revoke_make_the_local_lesson(
        spamd_with: Callable[..., tuple[int, DictTeacher]]) -> None:
    """spamc -C report|revoke asks for local and remote: the local lesson is made, there is
    no remote database, so spamc says it could not report (as spamd without Razor)."""
    require_spamc()
    port, teacher = spamd_with(allow_tell=True)
    unable = b"Unable to report/revoke message\n"
    assert learn(port, "report", flag="-C") == Spamc(0, unable)
    assert list(teacher.lessons.values()) == ["spam"]
    assert learn(port, "revoke", flag="-C") == Spamc(0, unable)
    assert list(teacher.lessons.values()) == ["ham"]


def test_tell_answers_byte_for_byte_as_spamd(spamd_with: Callable[..., tuple[int, DictTeacher]]) -> None:
    port, _teacher = spamd_with(allow_tell=True)

    def tell(headers: bytes) -> bytes:
        return exchange(port, b"TELL SPAMC/1.5\r\n" + headers
                        + b"Content-length: %d\r\n\r\n" % len(MESSAGE) + MESSAGE)

    assert tell(b"Message-class: spam\r\nSet: local\r\n") == b"SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n\r\n"
    assert tell(b"Message-class: spam\r\nSet: local\r\n") == b"SPAMD/1.1 0 EX_OK\r\n\r\n\r\n"
    assert tell(b"Remove: local\r\n") == b"SPAMD/1.1 0 EX_OK\r\nDidRemove: local\r\n\r\n\r\n"
    assert tell(b"") == b"SPAMD/1.1 0 EX_OK\r\n\r\n\r\n"          # asked nothing, did nothing


@pytest.mark.parametrize("request_bytes, reply", [
    (b"Set: local\r\nContent-length: 5\r\n\r\nhello", b"76 Bad header line: (Set: local needs a Message-class"),
    (b"Message-class: eggs\r\nSet: local\r\nContent-length: 5\r\n\r\nhello",
     b"76 Bad header line: (Message-class header contains invalid class)"),
    (b"Message-class: spam\r\nSet: local\r\nRemove: local\r\nContent-length: 5\r\n\r\nhello",
     b"76 Bad header line: Unable to set local and remove local in the same operation."),
    (b"Message-class: spam\r\nSet: local\r\nContent-length: 500\r\n\r\nhello",
     b"76 Bad header line: (Content-Length mismatch: Expected 500 bytes, got 5 bytes)"),
    (b"Message-class: spam\r\nSet: local\r\nContent-length: 200000\r\n\r\nhello",
     b"65 Message too large: over max_message_size (100000 bytes)"),
    (b"Message-class: spam\r\nSet: local\r\nContent-length: 5\r\n", b"76 Bad header line: (EOF during headers)"),
])
def test_bad_tells_get_spamds_errors_and_teach_nothing(
        spamd_with: Callable[..., tuple[int, DictTeacher]], request_bytes: bytes, reply: bytes) -> None:
    port, teacher = spamd_with(allow_tell=True)
    answer = exchange(port, b"TELL SPAMC/1.5\r\n" + request_bytes)
    assert answer.startswith(b"SPAMD/1.0 " + reply) and answer.count(b"\r\n") == 1, answer
    assert teacher.calls == 0


def test_tell_is_refused_as_spamd_does_while_off(spamd_with: Callable[..., tuple[int, DictTeacher]],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """allow_tell is off by default: spamd's own refusal, and our log says why. spamc's
    TELL ignores the code and fails reading headers that never come (EX_IOERR, 74), as it
    does against spamd itself."""
    require_spamc()
    port, teacher = spamd_with()
    assert exchange(port, b"TELL SPAMC/1.5\r\nMessage-class: spam\r\nSet: local\r\n"
                          b"Content-length: %d\r\n\r\n" % len(MESSAGE) + MESSAGE) == OFF
    got = learn(port, "spam")
    assert got.returncode == 74 and b"Message successfully" not in got.out, got
    assert "refused: Service Unavailable: TELL commands are not enabled" in caplog.text
    assert teacher.calls == 0
    assert exchange(port, b"PING SPAMC/1.5\r\n\r\n") == b"SPAMD/1.5 0 PONG\r\n"   # the rest still works


def test_a_lesson_that_cannot_be_recorded_is_a_temporary_error(
        spamd_with: Callable[..., tuple[int, DictTeacher]]) -> None:
    require_spamc()
    port, teacher = spamd_with(allow_tell=True)
    teacher.broken = True
    got = learn(port, "spam")
    assert got.returncode == 74 and b"Message successfully" not in got.out, got   # see above
    assert exchange(port, b"TELL SPAMC/1.5\r\nRemove: local\r\nContent-length: 1\r\n\r\nx").startswith(
        b"SPAMD/1.0 75 Service temporarily unavailable: ")
    teacher.broken = False
    assert learn(port, "spam") == Spamc(0, b"Message successfully un/learned\n")


def test_without_a_learning_engine_tell_is_unavailable(sink: Sink, scorer: Any, tmp_path: Path) -> None:
    from filterd.config import load_config

    path = write_config(tmp_path / "noteacher.yaml", {"next_hop": sink.address, "learning": None,
                                                      "spamd": {"listen": "127.0.0.1:0", "allow_tell": True}})
    server = InProcessFilterd(load_config(path), scorer).start()
    try:
        port = int(next(f for f in server.daemon.frontends if f.name == "spamd").address.rpartition(":")[2])
        answer = exchange(port, b"TELL SPAMC/1.5\r\nRemove: local\r\nContent-length: 1\r\n\r\nx")
        assert answer == b"SPAMD/1.0 69 Service Unavailable: learning is off in this filterd (learning: null)\r\n"
    finally:
        server.stop()


def test_a_users_lessons_reach_that_users_scans(daemon_factory: Any, tmp_path: Path) -> None:
    """learning.per_user with the real learning engine: `spamc -u alice -L spam` moves the
    score of alice's scans (spamd `User:`), and not bob's."""
    require_spamc()
    daemon = daemon_factory(spamd={"listen": "127.0.0.1:0", "allow_tell": True},
                            learning={"store": str(tmp_path / "store"), "per_user": True})
    port = frontend_port(daemon, "spamd")

    def points(user: str) -> float:
        got = subprocess.run([SPAMC, "-d", "127.0.0.1", "-p", str(port), "-x", "-c", "-u", user],
                             input=HAM, capture_output=True, timeout=60, check=False)
        return float(got.stdout.split(b"/")[0])

    before = points("alice")
    assert points("bob") == before
    taught = subprocess.run([SPAMC, "-d", "127.0.0.1", "-p", str(port), "-L", "spam", "-u", "alice"],
                            input=HAM, capture_output=True, timeout=60, check=False)
    assert taught.stdout == b"Message successfully un/learned\n", taught
    wait_until(lambda: points("alice") > before + 1.0, 10, "alice's lesson in alice's scans")
    assert points("bob") == before
