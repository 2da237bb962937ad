"""`python -m export retrain`: the whole cycle on small Maildirs built from the corpus.

Two real training runs (tiny settings, a few seconds each): one on correctly labelled mail
installs its candidate; one on mail whose training part is mislabelled (the held-out part
stays right) is refused and leaves the live model alone. The rest checks the pieces:
the install rule, the stable holdout, the atomic swap, and refusals that train nothing.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from export import install
from export.corpus import iter_path
from export.retrain import (
    Figures,
    Rule,
    decide,
    holdout_of,
    main_pid,
    reload_filterd,
)
from filterd.pipeline.artifact import read_manifest
from filterd.pipeline.scorer import Scorer
from tests.fixtures.smtp import wait_until

REPO = Path(__file__).resolve().parent.parent
HOLDOUT = 0.25
PER_CLASS = 160
# Ham enough that 0.5 % and 0.1 % of the training ham differ (>= 200 of it): with less, the
# tag and reject thresholds come out equal, and retrain keeps such a candidate out.
PER_HAM = 300
TINY = ["epochs=2", "max_tokens=64", "vocab_size=2000", "hidden=16", "embed=16", "threads=1"]


def first_messages(tarball: Path, count: int) -> list[bytes]:
    out = []
    with tarfile.open(tarball) as tar:
        for member in tar:
            if member.isfile() and not member.name.endswith("cmds"):
                out.append(tar.extractfile(member).read())  # type: ignore[union-attr]
                if len(out) == count:
                    break
    return out


def maildir(path: Path, messages: list[bytes]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    for i, raw in enumerate(messages):
        (path / "cur" / f"{i}.retrain-test:2,S").write_bytes(raw)
    return path


def write_config(path: Path, ham: Path, spam: Path, state: Path) -> Path:
    model = str(state / "model")
    config = {
        "model": {"path": model},
        "learning": {"store": str(state / "learning")},   # not the machine's
        "retrain": {
            "ham": [str(ham)],
            "spam": [str(spam)],
            "model_dir": model,
            "work_dir": str(state / "retrain"),
            "holdout": HOLDOUT,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def retrain(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "export", "retrain", "-c", str(config)]
    for pair in TINY:
        args += ["--set", pair]
    return subprocess.run(
        [*args, *extra], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def last_run(state: Path) -> dict:
    return json.loads((state / "retrain" / "last-run.json").read_text())


@pytest.fixture(scope="module")
def mail(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Correct Maildirs, and poisoned ones: training messages swapped, holdout kept right."""
    root = tmp_path_factory.mktemp("mail")
    ham = first_messages(corpus_dir / "20030228_easy_ham.tar.bz2", PER_HAM)
    spam = first_messages(corpus_dir / "20030228_spam.tar.bz2", PER_CLASS)

    def held(raw: bytes) -> bool:
        return holdout_of(raw, HOLDOUT)

    return {
        "ham": maildir(root / "ham", ham),
        "spam": maildir(root / "spam", spam),
        "bad_ham": maildir(
            root / "bad_ham", [r for r in ham if held(r)] + [r for r in spam if not held(r)]
        ),
        "bad_spam": maildir(
            root / "bad_spam", [r for r in spam if held(r)] + [r for r in ham if not held(r)]
        ),
    }


@contextmanager
def hup_recorder(record: Path) -> Iterator[int]:
    """A stand-in for filterd: a process that appends a line to `record` on each SIGHUP."""
    code = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGHUP, lambda *a: open({str(record)!r}, 'a').write('HUP\\n'))\n"
        "print('ready', flush=True)\ntime.sleep(600)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            yield proc.pid
        finally:
            proc.kill()


def hups(record: Path) -> str:
    """What the recorder wrote, once it wrote anything: signals are handled asynchronously."""
    return wait_until(lambda: record.exists() and record.read_text(), 10, "the recorder to write",
                      interval=0.01)


@pytest.fixture(scope="module")
def hup_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    record = tmp_path_factory.mktemp("hup") / "hups"
    with hup_recorder(record) as pid:
        yield pid, record


@pytest.fixture(scope="module")
def state(mail: dict[str, Path], hup_listener, tmp_path_factory: pytest.TempPathFactory):
    """A state dir after one good cycle (no live model before it)."""
    state = tmp_path_factory.mktemp("state")
    config = write_config(state / "config.yaml", mail["ham"], mail["spam"], state)
    result = retrain(config, "--reload-command", f"kill -HUP {hup_listener[0]}")
    assert result.returncode == 0, result.stderr
    return state


@pytest.mark.corpus
@pytest.mark.torch
@pytest.mark.slow
def test_good_candidate_is_installed_and_filterd_reloaded(state: Path, hup_listener) -> None:
    record = last_run(state)
    assert record["installed"] is True
    assert record["live"] is None and record["candidate"]["auc"] >= Rule().min_auc
    model = state / "model"
    assert model.is_symlink()
    assert model.resolve().parent == install.versions_dir(model)
    assert Scorer.load(model).version == record["candidate"]["version"]
    assert hups(hup_listener[1]) == "HUP\n"
    # The copies of users' mail made for training are gone; no candidate is left over.
    assert not (state / "retrain" / "run").exists()
    assert not list(install.versions_dir(model).glob(".candidate-*"))


@pytest.mark.corpus
@pytest.mark.torch
@pytest.mark.slow
def test_mislabelled_candidate_is_refused(state: Path, mail: dict[str, Path], hup_listener) -> None:
    model = state / "model"
    live_before = model.resolve()
    config = write_config(state / "bad.yaml", mail["bad_ham"], mail["bad_spam"], state)
    # --min-auc 0: it must be the comparison with the live model that refuses it.
    result = retrain(config, "--min-auc", "0", "--reload-command", f"kill -HUP {hup_listener[0]}")
    assert result.returncode == 0, result.stderr
    record = last_run(state)
    assert record["installed"] is False
    assert "candidate AUC" in record["reason"]
    assert record["candidate"]["auc"] < record["live"]["auc"]
    assert model.resolve() == live_before
    read_manifest(model)  # every hash still matches
    assert hup_listener[1].read_text() == "HUP\n"  # no second reload
    assert not list(install.versions_dir(model).glob(".candidate-*"))
    assert "kept out" in result.stderr


@pytest.mark.corpus
@pytest.mark.torch
@pytest.mark.slow
def test_candidate_with_equal_thresholds_is_kept_out(state: Path, mail: dict[str, Path],
                                                     tmp_path: Path, hup_listener) -> None:
    """Too little training ham (under 200) calibrates tag and reject to the same value: a
    model whose reject_at: manifest would reject all it tags is never installed."""
    raws = [p.read_bytes() for p in sorted((mail["ham"] / "cur").iterdir())]
    held = [r for r in raws if holdout_of(r, HOLDOUT)]
    little = maildir(tmp_path / "little_ham", held + [r for r in raws if not holdout_of(r, HOLDOUT)][:100])
    model = state / "model"
    live_before = model.resolve()
    config = write_config(state / "little.yaml", little, mail["spam"], state)
    result = retrain(config, "--reload-command", f"kill -HUP {hup_listener[0]}")
    assert result.returncode == 0, result.stderr
    record = last_run(state)
    assert record["installed"] is False
    assert record["reason"].startswith("candidate's tag and reject thresholds are the same"), record
    assert model.resolve() == live_before
    assert hup_listener[1].read_text() == "HUP\n"  # no reload
    assert not list(install.versions_dir(model).glob(".candidate-*"))
    assert "kept out: candidate's tag and reject thresholds are the same" in result.stderr


@pytest.mark.corpus
def test_too_little_mail_trains_nothing(mail: dict[str, Path], tmp_path: Path) -> None:
    one = next((mail["ham"] / "cur").iterdir()).read_bytes()
    few = maildir(tmp_path / "few", [one])
    config = write_config(tmp_path / "config.yaml", few, mail["spam"], tmp_path / "state")
    result = retrain(config)
    assert result.returncode == 1
    assert "too little labelled mail" in result.stderr
    assert not (tmp_path / "state" / "model").exists()
    assert not list((tmp_path / "state").glob("model.versions/*"))


def test_a_second_run_at_the_same_time_fails_at_once(tmp_path: Path) -> None:
    """While one run holds the lock, another fails at once instead of racing it."""
    state = tmp_path / "state"
    (state / "retrain").mkdir(parents=True)
    config = write_config(tmp_path / "config.yaml", tmp_path, tmp_path, state)
    with open(state / "retrain" / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = retrain(config)
    assert result.returncode == 1
    assert "another retrain holds" in result.stderr


def test_bad_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("retrain: {holdout: 1.5}\n")
    result = retrain(config)
    assert result.returncode == 2
    assert "retrain.holdout" in result.stderr


def test_holdout_is_a_stable_function_of_the_message() -> None:
    messages = [f"Subject: {i}\n\nbody {i}\n".encode() for i in range(2000)]
    first = [holdout_of(raw, 0.2) for raw in messages]
    assert first == [holdout_of(raw, 0.2) for raw in reversed(messages)][::-1]
    assert 0.15 < sum(first) / len(first) < 0.25
    # A larger holdout only adds messages: nothing moves from holdout back to training.
    assert all(holdout_of(raw, 0.3) for raw, held in zip(messages, first) if held)


LIVE = Figures(auc=0.98, recall=0.80, version="live")


@pytest.mark.parametrize(
    ("auc", "recall", "installed", "reason"),
    [
        (0.98, 0.80, True, "AUC"),  # equal is not worse
        (0.976, 0.80, True, "AUC"),  # within max_auc_drop
        (0.97, 0.90, False, "candidate AUC"),
        (0.99, 0.78, False, "candidate recall"),
        (0.99, 0.795, True, "recall"),  # within max_recall_drop
        (0.85, 0.80, False, "below the floor"),
    ],
)
def test_install_rule(auc: float, recall: float, installed: bool, reason: str) -> None:
    ok, why = decide(Figures(auc, recall, "candidate"), LIVE, Rule())
    assert ok is installed and reason in why


def test_install_rule_without_live_model() -> None:
    assert decide(Figures(0.95, 0.1, "c"), None, Rule())[0] is True
    assert decide(Figures(0.80, 0.9, "c"), None, Rule())[0] is False
    assert decide(Figures(float("nan"), 0.9, "c"), None, Rule())[0] is False


def test_reload_is_skipped_when_filterd_is_not_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A fake /proc: the real one may hold a real filterd, which a test must not signal.
    fake_process(tmp_path / "proc", 1, 0, "/init.scope")
    reload_filterd(None, tmp_path / "proc")
    assert "not running here" in caplog.text and "skipping reload" in caplog.text


def test_reload_signals_the_main_process_of_filterd_service(tmp_path: Path) -> None:
    record = tmp_path / "hups"
    with hup_recorder(record) as pid:
        fake_process(tmp_path / "proc", pid, 1, "/system.slice/filterd.service")
        reload_filterd(None, tmp_path / "proc")
        assert hups(record) == "HUP\n"


def fake_process(proc: Path, pid: int, ppid: int, cgroup: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")
    (proc / str(pid) / "stat").write_text(f"{pid} (python3 (x)) S {ppid} {pid} {pid} 0 -1\n")


def test_main_pid_is_the_unit_process_whose_parent_is_outside_it(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_process(proc, 1, 0, "/init.scope")
    fake_process(proc, 700, 1, "/system.slice/filterd.service")  # supervisor
    fake_process(proc, 701, 700, "/system.slice/filterd.service")  # a worker
    fake_process(proc, 702, 700, "/system.slice/filterd.service")
    fake_process(proc, 800, 1, "/system.slice/filterd-retrain.service")
    (proc / "self").mkdir()
    (proc / "900").mkdir()  # another user's process, hidden by ProtectProc=invisible
    assert main_pid("filterd.service", proc) == 700
    assert main_pid("filterd-retrain.service", proc) == 800
    assert main_pid("postfix.service", proc) is None


@pytest.fixture
def artifact(state: Path, tmp_path: Path) -> Path:
    """A copy of the good run's artifact folder, to install again and again."""
    return Path(shutil.copytree(state / "model", tmp_path / "artifact"))


def fresh_copy(artifact: Path, n: int) -> Path:
    return Path(shutil.copytree(artifact, artifact.parent / f"candidate-{n}"))


@pytest.mark.corpus
@pytest.mark.torch
@pytest.mark.slow
def test_first_install_adopts_a_plain_folder(artifact: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(artifact, tmp_path / "live" / "model"))
    target = install.install(fresh_copy(artifact, 1), model)
    assert model.is_symlink() and model.resolve() == target
    adopted = list(install.versions_dir(model).glob("*-initial"))
    assert len(adopted) == 1
    read_manifest(adopted[0])


@pytest.mark.corpus
@pytest.mark.torch
@pytest.mark.slow
def test_live_model_is_always_whole_during_swaps(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that resolves the link and checks every hash never sees a partial model."""
    monkeypatch.setattr(install, "KEEP", 1000)  # keep folders a reader may still be in
    model = tmp_path / "live" / "model"
    install.install(fresh_copy(artifact, 0), model)
    done, failures, reads = threading.Event(), [], [0]

    def reader() -> None:
        while not done.is_set():
            try:
                read_manifest(model.resolve(strict=True))
                reads[0] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 15):
            install.install(fresh_copy(artifact, n), model)
    finally:
        done.set()
        thread.join()
    assert failures == [] and reads[0] > 0


@pytest.mark.corpus
@pytest.mark.torch
@pytest.mark.slow
def test_failed_swap_leaves_the_live_model(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "live" / "model"
    first = install.install(fresh_copy(artifact, 0), model)

    def disk_full(src: object, dst: object) -> None:  # a fault we cannot cause for real
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(install.os, "replace", disk_full)
    with pytest.raises(OSError):
        install.install(fresh_copy(artifact, 1), model)
    assert model.resolve() == first
    read_manifest(model)


def test_a_maildir_is_its_own_messages_only(tmp_path: Path) -> None:
    inbox = maildir(tmp_path / "Maildir", [b"Subject: a\n\nx\n"])
    (inbox / "new" / "1.retrain-test").write_bytes(b"Subject: n\n\nw\n")
    (inbox / "tmp" / "2.retrain-test").write_bytes(b"Subject: t\n\nbeing delivered\n")
    maildir(inbox / ".Junk", [b"Subject: b\n\ny\n"])  # a Maildir++ subfolder: another mailbox
    (tmp_path / "an.mbox").write_bytes(b"From a@example.org Thu Nov 26 12:00:00 2026\nSubject: m\n\nz\n"
                                       b"From b@example.org Thu Nov 26 12:00:01 2026\nSubject: o\n\nv\n")
    assert [s.raw for s in iter_path(inbox, 0)] == [b"Subject: a\n\nx\n", b"Subject: n\n\nw\n"]
    assert [s.raw for s in iter_path(inbox / ".Junk", 1)] == [b"Subject: b\n\ny\n"]
    assert [s.raw for s in iter_path(tmp_path / "an.mbox", 1)] == [b"Subject: m\n\nz\n", b"Subject: o\n\nv\n"]
