"""The milter on a UNIX socket behind a real Postfix (smtpd_milters = unix:/path), and who
may connect to that socket.

The socket lives in a set-group-ID directory of group postfix (docs/milter.md, "UNIX
socket"): filterd (root here) creates it mode 0660, it takes the directory's group, so
Postfix's smtpd (user postfix) connects and a user outside the group cannot.
"""

from __future__ import annotations

import grp
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.postfix import MailPath, corpus_messages, require_postfix, swaks

pytestmark = [pytest.mark.postfix, pytest.mark.corpus, pytest.mark.slow]


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[Path]:
    require_postfix()
    path = Path(tempfile.mkdtemp(prefix="filterd-milter-"))
    os.chown(path, 0, grp.getgrnam("postfix").gr_gid)
    path.chmod(0o2750)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def path(postfix_factory: Any, socket_dir: Path) -> MailPath:
    return postfix_factory("milter", milter={"listen": f"unix:{socket_dir}/milter.sock"})


def test_postfix_tags_through_the_unix_socket(path: MailPath, corpus_dir: Path, tmp_path: Path) -> None:
    spam = corpus_messages(corpus_dir, "spam", 1)[0]
    path.sink.clear()
    result = swaks(path.postfix.smtp_port, b"X-Spam-Flag: NO\r\n" + spam, tmp_path)
    assert result.data_reply().startswith("250"), result.transcript
    got = path.sink.wait_for(1)[0]
    assert got.header("X-Spam-Flag") == "YES" and got.header("X-Spam-Untrusted-Flag") == "NO"
    assert (got.header("X-Spam-Status") or "").startswith("Yes, score=")
    assert path.filterd is not None
    log = path.filterd.log()
    assert "milter listening on unix:" in log and "frontend=milter" in log
    assert "Traceback" not in log


def test_socket_is_0660_in_the_directory_group_and_others_cannot_connect(
        path: MailPath, socket_dir: Path) -> None:
    sock = socket_dir / "milter.sock"
    python = shutil.which("python3", path="/usr/bin:/bin")   # one that other users may run
    if python is None:
        pytest.fail("no /usr/bin/python3 to connect as another user")
    info = sock.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == grp.getgrnam("postfix").gr_gid
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\n")
    outsider = subprocess.run([python, "-c", probe, str(sock)], user="nobody", group="nogroup",
                              extra_groups=[], cwd="/", check=False, timeout=30)
    assert outsider.returncode == 13, "a user outside the socket's group could connect"
    member = subprocess.run([python, "-c", probe, str(sock)], user="postfix", group="postfix",
                            extra_groups=[], cwd="/", check=False, timeout=30)
    assert member.returncode == 0, "the postfix user could not connect"


def test_stop_removes_the_socket_and_start_replaces_a_stale_one(path: MailPath, socket_dir: Path) -> None:
    assert path.filterd is not None
    path.filterd.stop()
    where = socket_dir / "milter.sock"
    assert not where.exists()
    stale = socket.socket(socket.AF_UNIX)   # a socket left behind, as after a SIGKILL
    stale.bind(str(where))
    stale.close()
    path.filterd.start()
    assert stat.S_ISSOCK(where.stat().st_mode)


def test_a_file_that_is_not_a_socket_is_kept_and_filterd_says_why(path: MailPath, socket_dir: Path) -> None:
    assert path.filterd is not None
    path.filterd.stop()
    where = socket_dir / "milter.sock"
    where.write_bytes(b"someone's file\n")
    try:
        path.filterd.start(wait=False)
        assert path.filterd.wait(60) == 1
        assert where.read_bytes() == b"someone's file\n"
        said = [line for line in path.filterd.log().splitlines() if "is not a socket" in line]
        assert len(said) == 1 and f"cannot listen on unix:{where}" in said[0], said
    finally:
        path.filterd.stop()
        where.unlink()
        path.filterd.start()
