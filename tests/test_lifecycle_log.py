"""Logging and sd_notify units: journald detection and format, notify datagrams.

The end-to-end behaviour (a daemon's notify sequence, its log lines) is in
test_lifecycle_daemon.py; these pin the small pieces that make it up.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import pytest

from filterd.service.log import JournalFormatter, under_journald
from filterd.service.notify import Notifier


def test_under_journald_matches_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with (tmp_path / "a").open("w") as ours, (tmp_path / "b").open("w") as other:
        st = os.fstat(ours.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert under_journald(ours)
        assert not under_journald(other)       # inherited variable, stderr redirected elsewhere
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not under_journald(ours)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not under_journald(ours)


def test_journal_format_has_priority_on_every_line() -> None:
    formatter = JournalFormatter("%(name)s: %(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("filterd.x", logging.ERROR, __file__, 1, "failed: %s",
                                   ("it",), sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0] == "<3>filterd.x: failed: it"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    info = logging.LogRecord("filterd.x", logging.INFO, __file__, 1, "hello", (), None)
    assert formatter.format(info) == "<6>filterd.x: hello"


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_datagrams(tmp_path: Path, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if abstract:
            sock.bind(f"\0filterd-unit-{os.getpid()}-{tmp_path.name}")
            address = "@" + sock.getsockname()[1:].decode()
        else:
            sock.bind(str(tmp_path / "notify"))
            address = str(tmp_path / "notify")
        sock.settimeout(5)
        notifier = Notifier(address)
        assert notifier.ready("serving")
        assert sock.recv(1024) == b"READY=1\nSTATUS=serving"
        assert notifier.reloading()
        fields = sock.recv(1024).decode().split("\n")
        assert fields[0] == "RELOADING=1" and fields[1].startswith("MONOTONIC_USEC=")
        assert int(fields[1].split("=")[1]) > 0
        assert notifier.stopping()
        assert sock.recv(1024) == b"STOPPING=1"


def test_notifier_without_socket_is_silent(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    assert not Notifier("").ready()
    gone = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING):
        assert not gone.ready()
        assert not gone.stopping()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
