"""Learning end to end: `filterd learn` teaches a running filterd (two workers), and the store
survives what a disk and a machine do to it (SIGKILL mid-burst, a torn journal, corruption,
a full disk) without ever touching scanning.

Each worker's score is read over the spamd listener (tests/fixtures/learning.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.frontends import Spamc, require_spamc
from tests.fixtures.learning import learn, points, points_everywhere, spamc_learn, spamd_port
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.prereq import missing
from tests.fixtures.smtp import REPO, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.corpus]


@pytest.fixture(scope="module")
def spam(corpus_dir: Path) -> list[bytes]:
    return corpus_messages(corpus_dir, "spam", 60)


def serve(daemon_factory: Any, store: Path, workers: int = 2) -> tuple[Any, int]:
    daemon = daemon_factory(workers=workers, spamd={"listen": "127.0.0.1:0", "allow_tell": True},
                            learning={"store": str(store)})
    return daemon, spamd_port(daemon)


def test_spamc_tell_teaches_every_worker_within_a_second(daemon_factory: Any, tmp_path: Path,
                                                        spam: list[bytes]) -> None:
    require_spamc()
    daemon = daemon_factory(workers=2, spamd={"listen": "127.0.0.1:0", "allow_tell": True},
                            learning={"store": str(tmp_path / "store")}, metrics="127.0.0.1:0")
    port = spamd_port(daemon)
    message = spam[5]
    before = points_everywhere(port, message)
    assert len(before) == 1 and min(before) >= 5.0, before
    assert spamc_learn(port, message, "ham") == Spamc(0, b"Message successfully un/learned\n")
    taught = time.monotonic()
    wait_until(lambda: max(points_everywhere(port, message, 8)) < 5.0, 1.0, "every worker to learn")
    assert time.monotonic() - taught < 1.0
    after = points_everywhere(port, message)
    assert len(after) == 1, after
    assert spamc_learn(port, message, "ham") == Spamc(0, b"Message was already un/learned\n")
    assert spamc_learn(port, message, "forget") == Spamc(0, b"Message successfully un/learned\n")
    wait_until(lambda: points_everywhere(port, message, 8) == before, 1.0, "the lesson to be undone")
    assert spamc_learn(port, message, "forget") == Spamc(0, b"Message was already un/learned\n")
    assert (tmp_path / "store" / "journal").read_bytes().count(b"\n") == 2    # learn, forget
    exposed = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics").read().decode()
    counted = dict(re.findall(r'^filterd_lessons_total\{result="(\w+)"\} (\S+)$', exposed, re.M))
    assert counted == {"learned": "1.0", "already_learned": "1.0", "forgotten": "1.0",
                       "not_learned": "1.0"}, counted
    assert daemon.problems() == []


def test_learn_command_teaches_every_worker_within_a_second(daemon_factory: Any, tmp_path: Path,
                                                           spam: list[bytes]) -> None:
    daemon, port = serve(daemon_factory, tmp_path / "store")
    message = spam[0]
    before = points_everywhere(port, message)
    assert len(before) == 1 and min(before) >= 5.0, before
    (tmp_path / "m.eml").write_bytes(message)

    got = learn(daemon.config_path, "--ham", str(tmp_path / "m.eml"))
    assert got.returncode == 0, got
    assert "1 message(s) learned as ham, 0 already learned, 0 unreadable" in got.out
    taught = time.monotonic()
    wait_until(lambda: max(points_everywhere(port, message, 8)) < 5.0, 1.0, "every worker to learn")
    assert time.monotonic() - taught < 1.0
    after = points_everywhere(port, message)
    assert len(after) == 1, after                  # every worker holds the same weights

    again = learn(daemon.config_path, "--ham", "-", stdin=message)   # same message, on stdin
    assert again.returncode == 0 and "0 message(s) learned as ham, 1 already learned" in again.out
    time.sleep(0.5)
    assert points_everywhere(port, message) == after

    forgot = learn(daemon.config_path, "--forget", str(tmp_path / "m.eml"))
    assert forgot.returncode == 0 and "1 message(s) forgotten, 0 were not learned" in forgot.out
    wait_until(lambda: points_everywhere(port, message, 8) == before, 1.0, "the lesson to be undone")
    assert daemon.problems() == []


def test_learn_reads_folders_and_mbox_and_says_what_it_could_not(daemon_factory: Any, tmp_path: Path,
                                                               spam: list[bytes]) -> None:
    config = tmp_path / "filterd.yaml"
    config.write_text(f"learning: {{store: {tmp_path / 'store'}}}\n"
                      f"model: {{path: {REPO / 'model_artifacts'}, device: cpu}}\n")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for i, raw in enumerate(spam[:3]):
        (maildir / "cur" / f"{i}:2,S").write_bytes(raw)
    (maildir / "tmp" / "partial").write_bytes(b"Subject: half\r\n")   # a delivery in progress
    mbox = tmp_path / "box.mbox"
    mbox.write_bytes(b"".join(b"From x@example.org Thu Jan  1 00:00:00 2004\n" +
                              raw.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From ") + b"\n"
                              for raw in spam[3:5]))
    got = learn(config, "--spam", str(maildir), str(mbox), str(tmp_path / "nowhere"))
    assert got.returncode == 1, got
    assert "5 message(s) learned as spam, 0 already learned, 1 unreadable" in got.out
    assert got.err.strip().splitlines()[-1] == \
        f"filterd learn: {tmp_path / 'nowhere'}: No such file or directory"
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning: {store: relative/dir}\n")
    refused = learn(bad, "--spam", str(mbox))
    assert refused.returncode == 2 and "learning.store" in refused.err, refused


def test_sigkill_mid_burst_keeps_every_acknowledged_lesson(daemon_factory: Any, tmp_path: Path,
                                                          spam: list[bytes]) -> None:
    store = tmp_path / "store"
    daemon, port = serve(daemon_factory, store)
    folder = tmp_path / "burst"
    folder.mkdir()
    for i, raw in enumerate(spam[10:60]):
        (folder / f"{i:03d}.eml").write_bytes(raw)
    burst = subprocess.Popen([sys.executable, "-m", "filterd", "learn", "-c", str(daemon.config_path),
                              "--ham", str(folder)], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wait_until(lambda: (store / "journal").exists() and (store / "journal").stat().st_size > 2000,
               60, "some lessons")
    burst.send_signal(signal.SIGKILL)
    burst.wait()
    daemon.signal(signal.SIGKILL)               # and filterd too, as a power cut would
    daemon.wait()
    with (store / "journal").open("ab") as journal:   # a record the power cut tore in half
        journal.write(b'{"coef":1.0,"key":"ab')
    daemon.start()
    port = spamd_port(daemon)
    learned_points = points(port, spam[10])
    assert learned_points < 5.0                 # the first lesson was acknowledged before the kill
    got = learn(daemon.config_path, "--ham", str(folder))
    assert got.returncode == 0, got
    done = int(got.out.split(" message(s)")[0])
    kept = int(got.out.split(", ")[1].split(" already")[0])
    assert done + kept == 50 and kept > 0, got.out
    assert all(line.endswith(b"\n") for line in (store / "journal").read_bytes().splitlines(True))
    assert not [p for p in daemon.problems() if "learning" in p], daemon.problems()


def test_a_corrupt_store_is_refused_with_one_line_and_scanning_goes_on(
        daemon_factory: Any, tmp_path: Path, spam: list[bytes]) -> None:
    store = tmp_path / "store"
    daemon, port = serve(daemon_factory, store, workers=1)
    shipped = points(port, spam[1])
    (tmp_path / "m.eml").write_bytes(spam[1])
    assert learn(daemon.config_path, "--ham", str(tmp_path / "m.eml")).returncode == 0
    wait_until(lambda: points(port, spam[1]) != shipped, 1.0, "the lesson")
    daemon.stop()
    journal = (store / "journal").read_bytes()
    (store / "journal").write_bytes(journal.replace(b'"label":"ham"', b'"label":"hum"'))
    daemon.start()
    port = spamd_port(daemon)
    assert points(port, spam[1]) == shipped
    time.sleep(1.0)                              # several polls: still one line
    refusals = [line for line in daemon.log().splitlines() if "learning store" in line]
    assert len(refusals) == 1 and " ERROR " in refusals[0] and "refused" in refusals[0], refusals
    got = learn(daemon.config_path, "--spam", str(tmp_path / "m.eml"))
    assert got.returncode == 1 and "refused" in got.err, got
    assert points(port, spam[1]) == shipped


def test_a_store_filterd_cannot_reach_costs_one_line_and_never_scanning(
        daemon_factory: Any, tmp_path: Path, spam: list[bytes]) -> None:
    """As for a user without root on the default store (/var/lib/filterd/learning, the
    unit's): the path cannot be read (here: below a file, as root may read anything)."""
    (tmp_path / "file").write_bytes(b"")
    daemon, port = serve(daemon_factory, tmp_path / "file" / "learning", workers=1)
    points(port, spam[1])                        # a CHECK answered with its points
    time.sleep(1.0)                              # several polls: still one line
    refusals = [line for line in daemon.log().splitlines() if "learning store" in line]
    assert len(refusals) == 1 and "refused, scanning on the shipped weights" in refusals[0], refusals
    assert daemon.healthy()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (root only): a disk that fills up."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        missing("a full disk needs a tmpfs mount, which needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_lesson_and_never_scanning(daemon_factory: Any, tiny_disk: Path,
                                                        tmp_path: Path, spam: list[bytes]) -> None:
    store = tiny_disk / "store"
    daemon, port = serve(daemon_factory, store)
    shipped = points(port, spam[2])
    (tmp_path / "first.eml").write_bytes(spam[3])
    assert learn(daemon.config_path, "--spam", str(tmp_path / "first.eml")).returncode == 0
    journal = (store / "journal").read_bytes()
    filler = tiny_disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    (tmp_path / "m.eml").write_bytes(spam[2])
    got = learn(daemon.config_path, "--ham", str(tmp_path / "m.eml"))
    assert got.returncode == 1 and "No space left on device" in got.err, got
    told = spamc_learn(port, spam[2], "ham")
    assert told.returncode != 0, told                          # a temporary failure: try again
    assert not told.out.startswith(b"Message"), told
    assert (store / "journal").read_bytes() == journal       # nothing half-written
    assert points_everywhere(port, spam[2]) == {shipped}
    filler.unlink()
    assert learn(daemon.config_path, "--ham", str(tmp_path / "m.eml")).returncode == 0
    wait_until(lambda: max(points_everywhere(port, spam[2], 8)) < shipped, 1.0, "the lesson")
    problems = daemon.problems()
    assert len(problems) == 1 and "TELL not recorded" in problems[0] and "No space" in problems[0], problems


def test_check_config_says_what_the_store_holds(tmp_path: Path, spam: list[bytes]) -> None:
    config = tmp_path / "filterd.yaml"
    config.write_text(f"learning: {{store: {tmp_path / 'store'}}}\n"
                      f"model: {{path: {REPO / 'model_artifacts'}, device: cpu}}\n")
    (tmp_path / "m.eml").write_bytes(spam[4])
    assert learn(config, "--spam", str(tmp_path / "m.eml")).returncode == 0

    def check() -> str:
        done = subprocess.run([sys.executable, "-m", "filterd", "check-config", "-c", str(config)],
                              cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1]

    assert check() == f"learning store {tmp_path / 'store'}: 1 lesson(s), 1 made on this model"
    (tmp_path / "store" / "journal").write_bytes(b"not a journal line 00000000\n")
    assert "refused" in check()


def test_learn_as_root_leaves_the_store_to_the_user_filterd_runs_as(tmp_path: Path,
                                                                   spam: list[bytes]) -> None:
    if os.geteuid() != 0:
        missing("only root can give files away")
    state = tmp_path / "state"                  # the unit's StateDirectory, owned by filterd's user
    state.mkdir()
    os.chown(state, 65534, 65534)
    config = tmp_path / "filterd.yaml"
    config.write_text(f"learning: {{store: {state / 'learning'}}}\n"
                      f"model: {{path: {REPO / 'model_artifacts'}, device: cpu}}\n")
    (tmp_path / "m.eml").write_bytes(spam[6])
    assert learn(config, "--spam", str(tmp_path / "m.eml")).returncode == 0
    made = [state / "learning", *(state / "learning").rglob("*")]
    assert len(made) == 5 and {p.stat().st_uid for p in made} == {65534}, made
