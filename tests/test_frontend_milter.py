"""The milter listener behind a real Postfix (smtpd_milters, milter_protocol = 6), and hostile
milter clients.

swaks -> Postfix smtpd (smtpd_milters = inet:127.0.0.1:M) <-> filterd milter :M
      -> queue -> recording sink.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.frontends import check_report_header, frontend_port
from tests.fixtures.postfix import MailPath, strip_spam_headers, swaks
from tests.fixtures.smtp import unfold, wait_until

pytestmark = [pytest.mark.postfix, pytest.mark.corpus, pytest.mark.slow]


@pytest.fixture(scope="module")
def path(postfix_factory: Any) -> MailPath:
    return postfix_factory("milter")


def test_tags_at_the_top_and_renames_forged_headers(path: MailPath, spam: list[bytes],
                                                    tmp_path: Path) -> None:
    path.sink.clear()
    forged = b"X-Spam-Flag: NO\r\nX-Spam-Status: No, trust me\r\n" + spam[0]
    result = swaks(path.postfix.smtp_port, forged, tmp_path, to="spam@example.com")
    assert result.data_reply().startswith("250"), result.transcript
    got = path.sink.wait_for(1)[0]
    head, body = got.split()
    assert body == spam[0].partition(b"\r\n\r\n")[2]
    lines = unfold(head)
    ours = [line for line in lines if line.startswith(b"X-Spam-") and not line.startswith(b"X-Spam-Untrusted-")]
    assert [line.split(b":")[0] for line in ours] == [b"X-Spam-Flag", b"X-Spam-Score", b"X-Spam-Status"]
    assert got.header("X-Spam-Flag") == "YES"
    assert got.header("X-Spam-Untrusted-Flag") == "NO"
    assert got.header("X-Spam-Untrusted-Status") == "No, trust me"
    original = strip_spam_headers(spam[0].partition(b"\r\n\r\n")[0])
    assert strip_spam_headers(head)[-len(original):] == original
    assert path.filterd is not None
    log = path.filterd.log()
    assert "frontend=milter" in log and "queue_id=" in log and "client=127.0.0.1" in log


# A forged verdict among ordinary headers: above and below the Subject, and folded.
FORGED_INSIDE = (b"From: Alice <alice@example.org>\r\nTo: rcpt@example.com\r\n"
                 b"Subject: minutes of the meeting\r\nX-Spam-Flag: NO\r\n"
                 b"Date: Tue, 1 Oct 2002 10:00:00 +0100\r\nMessage-ID: <forged-inside@example.org>\r\n"
                 b"X-Spam-Status: No, score=-5.0\r\n\tfolded onto a second line\r\n"
                 b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
                 b"The minutes are attached below. See you next week.\r\n")


@pytest.mark.parametrize("prefix", [None, "[SPAM] "])
def test_renamed_headers_stay_where_the_forged_ones_were(path: MailPath, tmp_path: Path,
                                                         prefix: str | None) -> None:
    """Below Postfix's own Received: line, which milters are never shown: renamed in place,
    every other header in its order, and the Subject prefixed where it is."""
    assert path.filterd is not None
    path.sink.clear()
    if prefix:
        path.filterd.restart(policy={"tag_at": 0.0, "subject_prefix": prefix})
    try:
        result = swaks(path.postfix.smtp_port, FORGED_INSIDE, tmp_path, to="inside@example.com")
        assert result.data_reply().startswith("250"), result.transcript
        got = path.sink.wait_for(1)[0]
    finally:
        if prefix:
            path.filterd.restart(policy={"tag_at": "manifest", "subject_prefix": None})
    head, body = got.split()
    lines = unfold(head)
    names = [line.split(b":")[0] for line in lines]
    assert names == [b"X-Spam-Flag", b"X-Spam-Score", b"X-Spam-Status", b"Received", b"From", b"To",
                     b"Subject", b"X-Spam-Untrusted-Flag", b"Date", b"Message-ID",
                     b"X-Spam-Untrusted-Status", b"MIME-Version", b"Content-Type"], head.decode()
    assert lines[3].startswith(b"Received: from client.test.invalid")     # Postfix's own
    subject = (prefix or "").encode() + b"minutes of the meeting"
    assert lines[6:8] == [b"Subject: " + subject, b"X-Spam-Untrusted-Flag: NO"]
    assert lines[10] == b"X-Spam-Untrusted-Status: No, score=-5.0 folded onto a second line"
    assert b"X-Spam-Untrusted-Status: No, score=-5.0\r\n\tfolded onto a second line\r\n" in head + b"\r\n"
    assert body == FORGED_INSIDE.partition(b"\r\n\r\n")[2]


def test_reject_at_data_and_tempfail_while_filterd_is_down(path: MailPath, ham: list[bytes],
                                                           spam: list[bytes], tmp_path: Path) -> None:
    assert path.filterd is not None
    path.sink.clear()
    path.filterd.restart(policy={"tag_at": 0.0, "reject_at": 0.0})
    try:
        result = swaks(path.postfix.smtp_port, spam[1], tmp_path, to="reject@example.com")
        assert result.data_reply().startswith("550 5.7.1"), result.transcript
    finally:
        path.filterd.restart(policy={"tag_at": "manifest", "reject_at": None})
    path.filterd.stop()
    down = swaks(path.postfix.smtp_port, ham[0], tmp_path, to="later@example.com")
    assert down.data_reply().startswith("451"), down.transcript   # milter_default_action = tempfail
    path.filterd.start()
    again = swaks(path.postfix.smtp_port, ham[0], tmp_path, to="later@example.com")
    assert again.data_reply().startswith("250"), again.transcript
    got = path.sink.wait_for(1)
    assert [m.rcpt_tos for m in got] == [["later@example.com"]]   # once, and nothing else
    assert got[0].header("X-Spam-Flag") in ("YES", "NO")


def _packet(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("!L", len(payload) + 1) + kind + payload


NEGOTIATE = _packet(b"O", struct.pack("!LLL", 6, 0x1FF, 0x1FFFFF))


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.0\r\n\r\n",                          # a length of 1195725856 bytes
    b"\x00\x00",                                         # truncated length
    NEGOTIATE + b"\x00\x00\x00\x10C",                    # truncated packet
    NEGOTIATE + _packet(b"Z", b"junk"),                  # unknown command
    NEGOTIATE + _packet(b"C", b"no-terminator"),         # malformed connect
    _packet(b"O", b"\x00"),                              # malformed negotiate
    NEGOTIATE + _packet(b"L", b"X-A\x00v\x00") * 2 + b"\x00" * 4,   # zero length
])
def test_hostile_milter_clients_are_cut_off_and_the_daemon_lives(path: MailPath, data: bytes) -> None:
    assert path.filterd is not None
    port = frontend_port(path.filterd, "milter")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        while sock.recv(65536):
            pass                                         # the server closes: EOF
    wait_until(lambda: path.filterd is not None and path.filterd.alive(), 5, "filterd alive")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(NEGOTIATE)
        answer = sock.recv(5)
        assert answer[4:5] == b"O"                       # still negotiating with the next client
    assert "Traceback" not in path.filterd.log()


def test_over_max_bytes_is_relayed_unscored_and_over_max_message_size_refused(
        path: MailPath, ham: list[bytes], tmp_path: Path) -> None:
    """scoring.max_bytes: delivered with X-Spam-Status: Skipped; max_message_size: the
    milter stops buffering and Postfix answers its client 552 5.3.4, nothing is delivered."""
    assert path.filterd is not None
    path.sink.clear()
    path.filterd.restart(max_message_size=40_000, scoring={"max_bytes": 8_000})
    try:
        head, _, body = ham[0].partition(b"\r\n\r\n")
        padding = b"".join(b"line %05d of padding to make the message long\r\n" % i for i in range(400))
        big = head + b"\r\n\r\n" + body + padding            # ~20 KB: over max_bytes only
        result = swaks(path.postfix.smtp_port, big, tmp_path, to="big@example.com")
        assert result.data_reply().startswith("250"), result.transcript
        got = path.sink.wait_for(1)[0]
        assert got.header("X-Spam-Status") == "Skipped" and got.header("X-Spam-Flag") == "NO"
        assert got.split()[1] == body + padding
        huge = big + padding * 2                             # ~60 KB: over max_message_size
        refused = swaks(path.postfix.smtp_port, huge, tmp_path, to="huge@example.com")
        assert refused.data_reply().startswith("552 5.3.4"), refused.transcript
        log = path.filterd.log()
        assert "action=skipped" in log and "action=too_big" in log
        assert "Traceback" not in log
    finally:
        path.filterd.restart(max_message_size=52428800, scoring={"max_bytes": 10485760})
    assert [m.rcpt_tos for m in path.sink.messages] == [["big@example.com"]]


def test_report_header_with_policy_report_and_none_without(path: MailPath, spam: list[bytes],
                                                           tmp_path: Path) -> None:
    assert path.filterd is not None
    path.sink.clear()
    path.filterd.restart(policy={"report": True})
    try:
        result = swaks(path.postfix.smtp_port, spam[2], tmp_path, to="report@example.com")
        assert result.data_reply().startswith("250"), result.transcript
        got = path.sink.wait_for(1)[0]
    finally:
        path.filterd.restart(policy={"report": False})
    head, body = got.split()
    value = check_report_header(head)
    assert value.count("=") >= 4, value                     # rnn and at least three features
    assert [line.split(b":")[0] for line in unfold(head)[:4]] == [
        b"X-Spam-Flag", b"X-Spam-Score", b"X-Spam-Status", b"X-Spam-Report"]
    assert body == spam[2].partition(b"\r\n\r\n")[2]
    path.sink.clear()
    plain = swaks(path.postfix.smtp_port, spam[2], tmp_path, to="plain@example.com")
    assert plain.data_reply().startswith("250"), plain.transcript
    assert path.sink.wait_for(1)[0].header("X-Spam-Report") is None
