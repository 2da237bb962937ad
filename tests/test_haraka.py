"""Haraka's spamassassin plugin against filterd's spamd listener: the README's recipe, run
by a real Haraka (tests/fixtures/haraka.py) in front of a recording sink.

Three Harakas: the recipe with filterd up (tags, rejects at reject_threshold); with filterd
down (nothing listens on spamd_socket), the recipe (450, the sender retries) and the
plugin's default without `[defer]` (delivered unscanned).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.frontends import frontend_port
from tests.fixtures.haraka import Haraka, require_haraka
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.mta import delivered, readme_block, refused, running, send
from tests.fixtures.smtp import Sink, free_port
from tests.test_exim import pick_messages
from tests.test_frontend_spamd import HAM

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(daemon_factory: Any, corpus_dir: Path) -> Iterator[dict[str, Any]]:
    require_haraka()
    daemon = daemon_factory(spamd={"listen": "127.0.0.1:0"})
    spamd_port = frontend_port(daemon, "spamd")
    sink = Sink().start()
    ini = readme_block("Haraka, through the spamd listener", "spamd_socket=")
    assert "127.0.0.1:10783" in ini and "[defer]" in ini
    variants = {"up": ini.replace(":10783", f":{spamd_port}"),
                "down": ini.replace(":10783", f":{free_port()}"),
                "down_default": ini.replace(":10783", f":{free_port()}").split("[defer]")[0]}
    try:
        with running({name: functools.partial(Haraka, text, sink.port)
                      for name, text in variants.items()}) as harakas:
            yield {"harakas": harakas, "sink": sink,
                   **pick_messages(spamd_port, corpus_messages(corpus_dir, "spam", 20))}
    finally:
        sink.stop()


def test_haraka_tags_ham_and_spam(setup: dict[str, Any]) -> None:
    sink, haraka = setup["sink"], setup["harakas"]["up"]
    sink.clear()
    send(haraka, b"X-Spam-Flag: YES\r\n" + HAM)       # a forged flag: renamed, ours added
    send(haraka, setup["tag"])
    ham, spam = delivered(sink, haraka, 2)
    assert ham.header("X-Spam-Flag") == "NO" and ham.header("X-Old-Spam-Flag") == "YES", ham.data[:600]
    assert ham.header("Precedence") is None
    assert spam.header("X-Spam-Flag") == "YES" and spam.header("Precedence") == "junk", spam.data[:600]
    status = spam.header("X-Spam-Status")
    assert status is not None and status.startswith("Yes, score="), status
    assert "score=undefined" not in haraka.log()


def test_haraka_rejects_at_its_reject_threshold(setup: dict[str, Any]) -> None:
    haraka = setup["harakas"]["up"]
    rejected = refused(setup["sink"], haraka, setup["reject"])
    assert rejected.smtp_code == 550 and b"spam score exceeded threshold" in rejected.smtp_error


def test_haraka_defers_while_filterd_is_down(setup: dict[str, Any]) -> None:
    haraka = setup["harakas"]["down"]
    deferred = refused(setup["sink"], haraka, HAM)
    assert deferred.smtp_code == 450, deferred


def test_haraka_default_delivers_unscanned_while_filterd_is_down(setup: dict[str, Any]) -> None:
    sink, haraka = setup["sink"], setup["harakas"]["down_default"]
    sink.clear()
    send(haraka, setup["reject"])
    (got,) = delivered(sink, haraka, 1)
    assert got.header("X-Spam-Flag") is None
