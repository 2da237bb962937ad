"""X-Spam-Report end to end on the SMTP proxy: `filterd serve` with policy.report true adds
it (at the top, ASCII, folded under 998 octets, naming features), with false it does not.
The milter path has the same check behind Postfix (tests/test_frontend_milter.py)."""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import pytest

from filterd.verdict import fold
from tests.fixtures.frontends import check_report_header
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.smtp import Sink

pytestmark = [pytest.mark.corpus, pytest.mark.slow]


def _send(port: int, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sendmail("a@example.org", ["b@example.com"], message)


@pytest.mark.parametrize("report", [True, False])
def test_proxy_report_header(filterd_serve: Any, sink: Sink, corpus_dir: Path, report: bool) -> None:
    spam = corpus_messages(corpus_dir, "spam", 1)[0]
    daemon = filterd_serve(policy={"report": report}, model={"device": "cpu"})
    _send(daemon.port, spam)
    got = sink.wait_for(1)[0]
    head, body = got.split()
    assert body == spam.partition(b"\r\n\r\n")[2]
    if report:
        value = check_report_header(head)
        assert "word:" in value or "chars:" in value
    else:
        assert got.header("X-Spam-Report") is None
        assert b"X-Spam-Flag:" in head


def test_fold_keeps_lines_short_and_unfolds_to_the_value() -> None:
    value = " ".join(f"word:'w{i:02d}'=+0.{i:02d}" for i in range(30))
    folded = fold("X-Spam-Report", value)
    lines = ("X-Spam-Report: " + folded).split("\r\n")
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
    assert all(line.startswith("\t") for line in lines[1:])
    assert " ".join(line.strip() for line in lines).partition(": ")[2] == value
    long_word = "x" * 200
    assert fold("X-Spam-Report", f"a {long_word} b").split("\r\n\t") == ["a", long_word, "b"]
