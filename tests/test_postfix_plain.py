"""The private Postfix instance itself, without filterd: the fixture the other Postfix tests trust."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.postfix import MailPath, swaks

pytestmark = [pytest.mark.postfix]

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: plain path\r\n"
    b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
    b"Message-ID: <plain-1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"bye\r\n"
)


@pytest.fixture(scope="module")
def plain(postfix_factory) -> MailPath:
    return postfix_factory("plain")


def test_plain_postfix_relays_to_the_sink_unchanged(plain: MailPath, tmp_path: Path) -> None:
    result = swaks(plain.postfix.smtp_port, MESSAGE, tmp_path, to="bob@example.com")
    assert result.returncode == 0, result.transcript
    assert result.data_reply().startswith("250"), result.transcript
    (got,) = plain.sink.wait_for(1)
    assert got.rcpt_tos == ["bob@example.com"]
    head, body = got.split()
    assert body == MESSAGE.partition(b"\r\n\r\n")[2]
    assert head.startswith(b"Received: ")
    assert head.endswith(MESSAGE.partition(b"\r\n\r\n")[0])
    plain.postfix.wait_empty()
    assert "status=sent" in plain.postfix.maillog()
