"""The spamd listener with aiospamc, an asyncio Python client of the spamd protocol that
nobody here wrote: every request it has, compressed bodies, `User:`, and TELL.

aiospamc is in the `test` extra (pyproject.toml); on CI a missing one fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.frontends import DictTeacher
from tests.fixtures.prereq import require_module
from tests.fixtures.postfix import corpus_messages
from tests.test_frontend_spamd import HAM

pytestmark = [pytest.mark.slow]

aiospamc = require_module("aiospamc", "pip install -e '.[test]'")


@pytest.fixture
def spam(corpus_dir: Any) -> bytes:
    return corpus_messages(corpus_dir, "spam", 1)[0]


def run(request: str, message: bytes, port: int, **options: Any) -> Any:
    return asyncio.run(getattr(aiospamc, request)(message, host="127.0.0.1", port=port, **options))


def test_aiospamc_checks_reports_and_rewrites(spamd_with: Callable[..., tuple[int, DictTeacher]],
                                              spam: bytes) -> None:
    port, _teacher = spamd_with()
    for compress in (False, True):                        # Compress: zlib, as aiospamc sends it
        got = run("check", spam, port, compress=compress, user="alice")
        assert got.headers.spam.value is True and got.headers.spam.score >= 5.0, got.headers
        assert got.headers.spam.threshold == 5.0
        ham = run("check", HAM, port, compress=compress)
        assert ham.headers.spam.value is False and ham.headers.spam.score < 5.0
    report = run("report", spam, port)
    assert b"recurrent part of the network" in report.body
    assert run("report_if_spam", HAM, port).body == b""
    names = run("symbols", spam, port).body.decode().split(",")
    assert names and all(name.startswith(("FD_WORD_", "FD_CHARS_")) for name in names), names
    processed = run("process", HAM, port)
    assert processed.body.startswith(b"X-Spam-Flag: NO\r\n") and processed.body.endswith(HAM.split(b"\r\n\r\n", 1)[1])
    headers = run("headers", spam, port)
    assert headers.body.startswith(b"X-Spam-Flag: YES\r\n") and headers.body.endswith(b"\r\n\r\n")
    pong = asyncio.run(aiospamc.ping(host="127.0.0.1", port=port))
    assert pong.message == "PONG"


def test_aiospamc_tells(spamd_with: Callable[..., tuple[int, DictTeacher]]) -> None:
    port, teacher = spamd_with(allow_tell=True)
    got = run("tell", HAM, port, message_class="ham", set_action="local", user="bob")
    assert "local" in str(got.headers["DidSet"]), got.headers
    assert list(teacher.lessons.values()) == ["ham"] and next(iter(teacher.lessons))[0] == "bob"
    again = run("tell", HAM, port, message_class="ham", set_action="local", user="bob")
    assert "DidSet" not in again.headers
    removed = run("tell", HAM, port, message_class="ham", remove_action="local", user="bob")
    assert "local" in str(removed.headers["DidRemove"]) and teacher.lessons == {}


def test_aiospamc_raises_spamds_errors(spamd_with: Callable[..., tuple[int, DictTeacher]]) -> None:
    port, teacher = spamd_with()                           # allow_tell off
    with pytest.raises(aiospamc.responses.UnavailableException):
        run("tell", HAM, port, message_class="spam", set_action="local")
    assert teacher.calls == 0
    big = HAM + b"x" * 200_000                            # over this daemon's max_message_size
    with pytest.raises(aiospamc.responses.DataErrorException):
        run("check", big, port)
