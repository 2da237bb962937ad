"""Input that is not mail gets an answer, not a score, on every front-end (filterd/sniff.py).

One real `filterd serve` behind a real Postfix (milter recipe), with its SMTP proxy port
relaying to Postfix's re-injection port and a spamd listener beside it:

* the proxy relays a message with no header section (a filter never loses mail), with
  `X-Spam-Flag: NO` and `X-Spam-Status: Skipped, not a mail message (REASON)`, unscored;
* the milter answers the same headers for a message whose header section is empty;
* spamd says `Spam: False ; 0.0` (spamc -c exits 0) and its PROCESS copy carries the header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.clients import smtp_send
from tests.fixtures.frontends import frontend_port, require_spamc, spamc
from tests.fixtures.postfix import MailPath, swaks

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

BINARY = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00" + b"\x01\x02 binary\r\n" * 20
NOT_MAIL = [(b"", "empty"), (BINARY, "binary data"),
            (b'{"key": "value", "list": [1, 2, 3]}\r\n', "no header fields at the start"),
            (b"3 V1700000000 N12 G0123456789abcdef\r\n1 :1700000000.M1P2.host\r\n",
             "no header fields at the start")]


@pytest.fixture(scope="module")
def path(postfix_factory: Any) -> MailPath:
    return postfix_factory("milter", spamd={"listen": "127.0.0.1:0"})


@pytest.mark.parametrize(("data", "reason"), NOT_MAIL, ids=["empty", "elf", "json", "uidlist"])
def test_proxy_relays_not_mail_unscored(path: MailPath, data: bytes, reason: str) -> None:
    assert path.filterd is not None
    path.sink.clear()
    outcome = smtp_send(path.filterd.port, data)
    assert outcome.code == 250, outcome
    got = path.sink.wait_for(1)[0]
    assert got.header("X-Spam-Flag") == "NO"
    assert got.header("X-Spam-Status") == f"Skipped, not a mail message ({reason})"
    assert got.header("X-Spam-Score") is None
    assert "action=not_mail" in path.filterd.log()


def test_milter_relays_a_message_without_headers_unscored(path: MailPath, tmp_path: Path) -> None:
    """Postfix hands the milter no header at all (its own Received: line is not shown to
    milters): the message is delivered, marked as not mail, never scored."""
    assert path.filterd is not None
    path.sink.clear()
    result = swaks(path.postfix.smtp_port, b"\r\n" + BINARY, tmp_path, to="binary@example.com")
    assert result.data_reply().startswith("250"), result.transcript
    got = path.sink.wait_for(1)[0]
    assert got.header("X-Spam-Flag") == "NO" and got.header("X-Spam-Score") is None
    assert got.header("X-Spam-Status") == "Skipped, not a mail message (binary data)"
    assert BINARY in got.split()[1]
    assert "frontend=milter" in path.filterd.log() and "Traceback" not in path.filterd.log()


@pytest.mark.parametrize(("data", "reason"), NOT_MAIL[1:], ids=["elf", "json", "uidlist"])
def test_spamd_says_not_spam_and_not_scored(path: MailPath, data: bytes, reason: str) -> None:
    require_spamc()
    assert path.filterd is not None
    port = frontend_port(path.filterd, "spamd")
    check = spamc(port, data, "-c")
    assert (check.returncode, check.out.strip()) == (0, b"0.0/5.0"), check
    processed = spamc(port, data)
    assert processed.returncode == 0, processed
    assert f"X-Spam-Status: Skipped, not a mail message ({reason})\r\n".encode() in processed.out
    assert b"X-Spam-Score" not in processed.out
