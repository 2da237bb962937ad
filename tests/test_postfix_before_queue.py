"""filterd as Postfix's before-queue proxy filter (SMTPD_PROXY_README), against a real Postfix.

swaks -> Postfix smtpd (smtpd_proxy_filter) -> filterd -> smtpd -> queue -> recording sink.
A reject from filterd reaches the sending client during DATA.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.lifecycle import shipped_model
from tests.fixtures.postfix import MailPath, assert_intact, swaks
from tests.fixtures.smtp import wait_until

pytestmark = [pytest.mark.postfix, pytest.mark.corpus, pytest.mark.slow]


@pytest.fixture(scope="module")
def before(postfix_factory) -> MailPath:
    return postfix_factory("before")


def test_mail_passes_through_tagged_and_intact(before: MailPath, ham: list[bytes],
                                               spam: list[bytes], tmp_path: Path) -> None:
    before.sink.clear()
    sent = {"ham@example.com": ham[0], "spam@example.com": spam[0]}
    for rcpt, raw in sent.items():
        result = swaks(before.postfix.smtp_port, raw, tmp_path, to=rcpt)
        assert result.data_reply().startswith("250"), result.transcript
    got = {m.rcpt_tos[0]: m for m in before.sink.wait_for(2)}
    for rcpt, raw in sent.items():
        assert_intact(raw, got[rcpt])
        assert got[rcpt].header("X-Spam-Flag") in ("YES", "NO")
        assert got[rcpt].header("X-Spam-Status")
    before.postfix.wait_empty()


def test_reject_reaches_the_sending_client_as_5xx(before: MailPath, spam: list[bytes],
                                                  tmp_path: Path) -> None:
    assert before.filterd is not None
    before.sink.clear()
    before.filterd.restart(policy={"tag_at": 0.0, "reject_at": 0.0})  # every score reaches 0.0
    try:
        result = swaks(before.postfix.smtp_port, spam[1], tmp_path, to="reject@example.com")
        reply = result.data_reply()
        assert reply.startswith("550"), result.transcript
        assert "5.7.1" in reply, result.transcript
        assert result.returncode != 0
        assert before.postfix.queue() == []
        assert before.sink.messages == []
        assert before.filterd.alive()
    finally:
        before.filterd.restart(policy={"tag_at": "manifest", "reject_at": None})


def test_filterd_down_the_client_is_told_to_retry(before: MailPath, ham: list[bytes],
                                                  tmp_path: Path) -> None:
    """Before-queue there is no queue to keep the mail in: the client must get a 4xx."""
    assert before.filterd is not None
    before.sink.clear()
    before.filterd.stop()
    try:
        result = swaks(before.postfix.smtp_port, ham[1], tmp_path, to="later@example.com")
        assert any(reply.startswith("4") for reply in result.replies()), result.transcript
        assert not any(r.startswith("250 2.0.0") for r in result.replies()), result.transcript
        # Nothing queued for the recipient (the postmaster's error notice may be queued).
        queued = [r["address"] for m in before.postfix.queue() for r in m["recipients"]]
        assert "later@example.com" not in queued, queued
    finally:
        before.filterd.start()
    retry = swaks(before.postfix.smtp_port, ham[1], tmp_path, to="later@example.com")
    assert retry.data_reply().startswith("250"), retry.transcript
    # Postfix also mails the postmaster a transcript of the failed session (notify_classes).
    wait_until(lambda: any(m.rcpt_tos == ["later@example.com"] for m in before.sink.messages),
               60, "the retried message at the sink")
    (got,) = [m for m in before.sink.messages if m.rcpt_tos == ["later@example.com"]]
    assert_intact(ham[1], got)


def test_reject_at_the_manifest_threshold(before: MailPath, ham: list[bytes],
                                          spam: list[bytes], tmp_path: Path) -> None:
    """`reject_at: manifest`: what the model scores at or above its calibrated reject
    threshold gets 550 at the client, the rest is relayed."""
    from filterd.pipeline.scorer import Scorer

    assert before.filterd is not None
    scorer = Scorer.load(shipped_model(), device="cpu")
    before.sink.clear()
    before.filterd.restart(policy={"reject_at": "manifest"})
    passed = []
    try:
        for raw, score in zip([ham[0], *spam], scorer.score([ham[0], *spam]), strict=True):
            result = swaks(before.postfix.smtp_port, raw, tmp_path, to="judged@example.com")
            expected = "550" if score >= scorer.thresholds.reject else "250"
            assert result.data_reply().startswith(expected), (score, result.transcript)
            if expected == "250":
                passed.append(raw)
    finally:
        before.filterd.restart(policy={"reject_at": None})
    assert passed, "the ham must pass"
    got = before.sink.wait_for(len(passed))
    assert len(got) == len(passed)
    for raw in passed:  # Postfix may deliver them in any order
        (message,) = [m for m in got if m.split()[1] == raw.partition(b"\r\n\r\n")[2]]
        assert_intact(raw, message)
    before.postfix.wait_empty()
