"""Exim's `spam =` ACL condition against filterd's spamd listener: the README's recipe, run
by a real Exim (tests/fixtures/exim.py) in front of a recording sink.

Four Exims: the recipe as written and with `/defer_ok`, each with filterd up (the same
tags and rejects) and down (nothing listens on the spamd address): as written the message
is deferred (451, the sender retries), with `/defer_ok` accepted unscanned.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.exim import Exim, ensure_user, require_exim
from tests.fixtures.frontends import exchange, frontend_port
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.mta import delivered, readme_block, refused, running, send
from tests.fixtures.smtp import Sink, free_port
from tests.test_frontend_spamd import HAM

pytestmark = [pytest.mark.slow]


def points_of(port: int, message: bytes) -> float:
    answer = exchange(port, b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(message) + message)
    match = re.search(rb"Spam: \w+ ; (-?[\d.]+) /", answer)
    assert match, answer
    return float(match.group(1))


def pick_messages(spamd_port: int, spam: list[bytes]) -> dict[str, bytes]:
    """A message over 10 points (corpus spam) and one between 5 and 10: corpus spam scores
    far above 10, so the latter is our ham with the start of a spam body appended."""
    reject = next(m for m in spam if points_of(spamd_port, m) >= 10.0)
    for message in spam:
        body = message.split(b"\r\n\r\n", 1)[1]
        for cut in (200, 400, 800, 1600, 3200):
            mixed = HAM + body[:cut]
            if 5.0 <= points_of(spamd_port, mixed) < 10.0:
                return {"reject": reject, "tag": mixed}
    raise AssertionError("no message between 5 and 10 points among the mixtures")


@pytest.fixture(scope="module")
def setup(daemon_factory: Any, corpus_dir: Path) -> Iterator[dict[str, Any]]:
    require_exim()
    ensure_user()
    daemon = daemon_factory(spamd={"listen": "127.0.0.1:0"})
    spamd_port = frontend_port(daemon, "spamd")
    sink = Sink().start()
    acl = readme_block("Exim, `spam =` through the spamd listener", "acl_check_data:\n")
    defer_ok = acl.replace("nobody:true", "nobody:true/defer_ok")
    assert defer_ok.count("/defer_ok") == 2
    variants = {"up": (acl, spamd_port), "down": (acl, free_port()),
                "up_defer_ok": (defer_ok, spamd_port), "down_defer_ok": (defer_ok, free_port())}
    try:
        with running({name: functools.partial(Exim, text, port, sink.port)
                      for name, (text, port) in variants.items()}) as exims:
            yield {"exims": exims, "sink": sink, "daemon": daemon,
                   **pick_messages(spamd_port, corpus_messages(corpus_dir, "spam", 20))}
    finally:
        sink.stop()


@pytest.mark.parametrize("variant", ["up", "up_defer_ok"])
def test_exim_tags_ham_and_spam_with_a_clean_report(setup: dict[str, Any], variant: str) -> None:
    sink, exim = setup["sink"], setup["exims"][variant]
    sink.clear()
    send(exim, HAM)
    send(exim, setup["tag"])
    ham, spam = delivered(sink, exim, 2)
    score = ham.header("X-Spam-Score")
    assert score is not None and float(score.split()[0]) < 5.0, score
    spam_score = spam.header("X-Spam-Score")
    assert spam_score is not None and 5.0 <= float(spam_score.split()[0]) < 10.0, spam_score
    assert re.search(r"\(\+{5,10}\)$", spam_score), spam_score          # $spam_bar: one + a point
    report = spam.header("X-Spam-Report")
    assert report is not None and report.startswith("filterd: spam probability "), report
    assert "Content-length" not in report and "recurrent part of the network" in report
    lines = spam.split()[0].split(b"\r\n")
    assert all(line.strip() for line in lines), "a blank folded line in the header section"
    assert all(line[:1] in (b" ", b"\t") or b":" in line for line in lines), lines


@pytest.mark.parametrize("variant", ["up", "up_defer_ok"])
def test_exim_rejects_at_ten_points(setup: dict[str, Any], variant: str) -> None:
    exim = setup["exims"][variant]
    rejected = refused(setup["sink"], exim, setup["reject"])
    assert rejected.smtp_code == 550 and b"5.7.1 Message rejected as spam" in rejected.smtp_error


def test_exim_defers_while_filterd_is_down(setup: dict[str, Any]) -> None:
    """The recipe as written: no answer from filterd defers the message (451), so the
    sending MTA keeps it and retries; nothing is delivered unscanned."""
    exim = setup["exims"]["down"]
    deferred = refused(setup["sink"], exim, HAM)
    assert deferred.smtp_code == 451 and b"Temporary local problem" in deferred.smtp_error, deferred
    assert "spam acl condition: all spamd servers failed" in exim.log()


def test_exim_with_defer_ok_accepts_unscanned_while_filterd_is_down(setup: dict[str, Any]) -> None:
    sink, exim = setup["sink"], setup["exims"]["down_defer_ok"]
    sink.clear()
    send(exim, setup["reject"])
    (got,) = delivered(sink, exim, 1)
    assert got.header("X-Spam-Score") is None and got.header("X-Spam-Report") is None
