"""filterd's own errors are visible: a bug in the milter's scan or send path is logged with
its traceback (not taken for the MTA's malformed packet), a failure inside the text
pipeline is logged once per message and counted, and with policy.report each message goes
through the text pipeline and the model once (the explanation reuses the batch's work).

The faults are injected (a patched function): we cannot cause a bug of our own for real."""

from __future__ import annotations

import logging
import smtplib
import socket
import struct
from typing import Any

import pytest
from prometheus_client import REGISTRY

from filterd.frontends import milter
from filterd.pipeline import text
from filterd.pipeline.scorer import Scorer
from tests.fixtures.clients import ours_and_rest
from tests.fixtures.smtp import InProcessFilterd, wait_until

SPAMMY = b"Subject: free money\r\n\r\nClick here for FREE money now!!! Act today, limited offer.\r\n"


def _packet(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("!L", len(payload) + 1) + kind + payload


def test_a_bug_in_the_milters_own_path_is_logged_with_its_traceback(
        make_filterd: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("injected bug in filterd's own code")

    monkeypatch.setattr(milter, "edits", broken)   # end of message: after the scan, before the answer
    fd = make_filterd(milter={"listen": "127.0.0.1:0"})
    port = int(next(f for f in fd.daemon.frontends if f.name == "milter").address.rpartition(":")[2])
    caplog.set_level(logging.INFO, logger="filterd")
    conversation = (_packet(b"O", struct.pack("!LLL", 6, 0x1FF, 0x1FFFFF))
                    + _packet(b"M", b"<a@example.org>\0") + _packet(b"R", b"<b@example.org>\0")
                    + _packet(b"L", b"Subject\0hello\0") + _packet(b"N")
                    + _packet(b"B", b"A short message.\r\n") + _packet(b"E"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conversation)
        while sock.recv(65536):
            pass                                       # filterd closes the connection
    wait_until(lambda: any(r.exc_info for r in caplog.records), 10, "the error logged")
    errors = [r for r in caplog.records if r.exc_info]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR
    assert "injected bug" in str(errors[0].exc_info[1])
    assert not [r for r in caplog.records if "malformed" in r.getMessage()]


def test_a_pipeline_failure_is_logged_once_per_message_and_counted(
        make_filterd: Any, sink: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise IndexError("injected parser regression")

    monkeypatch.setattr(text, "_walk", broken)
    fd = make_filterd(policy={"report": True})     # with reasons: still one pipeline pass
    before = REGISTRY.get_sample_value("filterd_pipeline_errors_total") or 0.0
    caplog.set_level(logging.INFO, logger="filterd")
    with smtplib.SMTP(fd.host, fd.port) as client:
        assert client.sendmail("a@example.org", ["b@example.org"], SPAMMY) == {}
    ours, rest = ours_and_rest(sink.wait_for(1)[0].data)
    assert rest.endswith(SPAMMY) and "X-Spam-Score" in ours   # scored, from its <broken> tokens
    failed = [r for r in caplog.records if r.name == "filterd.pipeline.text"]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING, failed
    assert "injected parser regression" in str(failed[0].exc_info[1])
    assert REGISTRY.get_sample_value("filterd_pipeline_errors_total") == before + 1


class Counting:
    """The shipped scorer, counting text pipeline passes and model runs."""

    def __init__(self, real: Scorer) -> None:
        self.real = real
        self.version, self.thresholds, self.provider = real.version, real.thresholds, real.provider
        self.prepared = self.inferred = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def prepare(self, raw: bytes, keep_wide: bool = False) -> Any:
        self.prepared += 1
        return self.real.prepare(raw, keep_wide)

    def infer(self, batch: Any) -> list[float]:
        self.inferred += len(batch)
        return self.real.infer(batch)

    def infer_logits(self, batch: Any) -> Any:
        self.inferred += len(batch)
        return self.real.infer_logits(batch)


def test_with_reasons_a_message_is_prepared_once_and_inferred_once(
        make_filterd: Any, sink: Any, scorer: Scorer) -> None:
    fd = make_filterd(policy={"report": True})
    counting = Counting(scorer)
    served = InProcessFilterd(fd.config, counting).start()
    try:
        with smtplib.SMTP(served.host, served.port) as client:
            assert client.sendmail("a@example.org", ["b@example.org"], SPAMMY) == {}
        _, rest = ours_and_rest(sink.wait_for(1)[0].data)
    finally:
        served.stop()
    assert rest.startswith(b"X-Spam-Report: rnn=") and b"'money'" in rest, rest   # reasons named
    assert (counting.prepared, counting.inferred) == (1, 1)
