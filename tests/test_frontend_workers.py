"""`workers: 2` with the milter (behind a real Postfix) and spamd (spamc) listeners: both
workers serve each front-end, a SIGHUP while messages are in flight on both answers every
one of them and loses none, and the supervisor's metrics endpoint counts each message
under its front-end (filterd_messages_total{frontend="milter"|"spamd"}).
"""

from __future__ import annotations

import re
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.frontends import frontend_port, require_spamc, spamc
from tests.fixtures.postfix import MailPath, corpus_messages, swaks
from tests.fixtures.smtp import free_port, wait_until

pytestmark = [pytest.mark.postfix, pytest.mark.corpus, pytest.mark.slow]

ROUNDS, PER_ROUND = 2, 8


@pytest.fixture(scope="module")
def path(postfix_factory: Any) -> MailPath:
    return postfix_factory("milter", workers=2, spamd={"listen": "127.0.0.1:0"},
                           metrics=f"127.0.0.1:{free_port()}")


def _served_by(log: str, frontend: str) -> set[str]:
    """The worker pids (hex, from the connection ids) that logged a message of `frontend`."""
    return set(re.findall(rf"(\w+)\.{frontend[0]}\w+ frontend={frontend} ", log))


def _answered(log: str) -> int:
    return len(re.findall(r" frontend=(?:milter|spamd) ", log))


def _counted(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for labels, value in re.findall(r"^filterd_messages_total\{([^}]*)\} (\S+)$", text, re.M):
        frontend = re.search(r'frontend="(\w+)"', labels)
        assert frontend, labels
        out[frontend.group(1)] = out.get(frontend.group(1), 0.0) + float(value)
    return out


def test_two_workers_serve_reload_loses_nothing_and_metrics_count(
        path: MailPath, corpus_dir: Path, tmp_path: Path) -> None:
    require_spamc()
    daemon = path.filterd
    assert daemon is not None and daemon.metrics_port
    port = frontend_port(daemon, "spamd")
    mail = corpus_messages(corpus_dir, "ham", 2) + corpus_messages(corpus_dir, "spam", 2)
    path.sink.clear()

    def milter(i: int) -> str:
        return swaks(path.postfix.smtp_port, mail[i % len(mail)], tmp_path, to=f"r{i}@example.com").data_reply()

    def spamd(i: int) -> tuple[int, bytes]:
        got = spamc(port, mail[i % len(mail)], "-c")
        return got.returncode, got.out

    total = ROUNDS * PER_ROUND
    with ThreadPoolExecutor(2 * PER_ROUND) as pool:
        milters = [pool.submit(milter, i) for i in range(total)]
        spamds = [pool.submit(spamd, i) for i in range(total)]
        # SIGHUP once the first messages are answered, with the rest still in flight
        wait_until(lambda: _answered(daemon.log()) >= 2, 120, "the first messages", interval=0.02)
        daemon.signal(signal.SIGHUP)
        at_reload = _answered(daemon.log())
        milter_replies = [f.result(timeout=300) for f in milters]
        spamd_answers = [f.result(timeout=300) for f in spamds]
    assert all(r.startswith("250") for r in milter_replies), milter_replies
    assert all(code in (0, 1) and re.fullmatch(rb"-?\d+\.\d/5\.0\n", out) for code, out in spamd_answers), \
        spamd_answers
    got = path.sink.wait_for(total)
    assert sorted(m.rcpt_tos[0] for m in got) == sorted(f"r{i}@example.com" for i in range(total))
    assert all(m.header("X-Spam-Flag") in ("YES", "NO") for m in got)
    assert at_reload < 2 * total, "every message was answered before the reload"
    wait_until(lambda: "reloaded: model" in daemon.log(), 120, "the reload to finish")
    log = daemon.log()
    assert _answered(log) == 2 * total          # one line per message, none answered twice
    assert len(_served_by(log, "milter")) == 2, _served_by(log, "milter")
    assert len(_served_by(log, "spamd")) == 2, _served_by(log, "spamd")
    assert "Traceback" not in log
    counted = _counted(daemon.metrics_port)
    assert counted.get("milter") == total and counted.get("spamd") == total, counted
    assert counted.get("smtp", 0) == 0, counted
