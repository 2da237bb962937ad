"""filterd as Postfix's after-queue content filter (FILTER_README), against a real Postfix.

swaks -> Postfix smtpd -> queue -> filterd -> re-injection smtpd -> queue -> recording sink.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.postfix import MailPath, assert_intact, corpus_messages, swaks
from tests.fixtures.smtp import Received

pytestmark = [pytest.mark.postfix, pytest.mark.corpus, pytest.mark.slow]

COUNT = 5  # messages of each kind
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


@pytest.fixture(scope="module")
def after(postfix_factory) -> MailPath:
    return postfix_factory("after")


@pytest.fixture(scope="module")
def samples(corpus_dir: Path) -> dict[str, list[bytes]]:
    return {kind: corpus_messages(corpus_dir, kind, COUNT) for kind in ("ham", "spam")}


def verdict(got: Received) -> tuple[bool, float, float]:
    """(flagged, score, tag threshold) from our headers, checking they agree with each other."""
    flag, score, status = (got.header(h) for h in ("X-Spam-Flag", "X-Spam-Score", "X-Spam-Status"))
    assert flag in ("YES", "NO"), got.content[:600]
    assert score is not None and status is not None
    value = float(score)
    assert 0.0 <= value <= 1.0
    assert status.startswith("Yes," if flag == "YES" else "No,"), status
    assert f"score={score}" in status, status
    match = re.search(r"tag=([0-9.]+)", status)
    assert match, status
    tag = float(match.group(1))
    assert (flag == "YES") == (value >= tag), status
    return flag == "YES", value, tag


def send_all(path: MailPath, messages: dict[str, bytes], tmp_path: Path) -> None:
    for rcpt, message in messages.items():
        result = swaks(path.postfix.smtp_port, message, tmp_path, to=rcpt)
        assert result.data_reply().startswith("250"), result.transcript


def test_corpus_ham_and_spam_arrive_tagged_and_intact(
    after: MailPath, samples: dict[str, list[bytes]], tmp_path: Path
) -> None:
    after.sink.clear()
    sent = {f"{kind}{i}@example.com": raw for kind, raws in samples.items()
            for i, raw in enumerate(raws)}
    send_all(after, sent, tmp_path)
    got = {m.rcpt_tos[0]: m for m in after.sink.wait_for(len(sent))}
    assert sorted(got) == sorted(sent)
    flagged = {"ham": 0, "spam": 0}
    scores: dict[str, list[float]] = {"ham": [], "spam": []}
    for rcpt, raw in sent.items():
        assert_intact(raw, got[rcpt])
        is_spam, score, _ = verdict(got[rcpt])
        kind = "spam" if rcpt.startswith("spam") else "ham"
        flagged[kind] += is_spam
        scores[kind].append(score)
    # The model is not perfect (one miss each way allowed); this holds for any model worth
    # shipping: the shipped one flags all five spam and none of the ham.
    assert flagged["spam"] >= COUNT - 1 and flagged["ham"] <= 1, (flagged, scores)
    assert sum(scores["spam"]) > sum(scores["ham"]), scores
    after.postfix.wait_empty()


def test_forged_verdict_headers_from_outside_do_not_survive(after: MailPath, tmp_path: Path) -> None:
    after.sink.clear()
    forged = (b"From: a@example.org\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
              b"Message-ID: <forged@example.org>\r\nX-Spam-Flag: NO\r\n"
              b"X-Spam-Status: No, score=0.000\r\nSubject: trust me\r\n\r\nhello\r\n")
    send_all(after, {"forged@example.com": forged}, tmp_path)
    (got,) = after.sink.wait_for(1)
    flags = [line for line in got.split()[0].split(b"\r\n") if line.lower().startswith(b"x-spam-flag:")]
    assert len(flags) == 1, flags  # ours only; the forged one was renamed
    assert_intact(forged, got)


def test_filterd_down_postfix_defers_then_delivers_everything(
    after: MailPath, samples: dict[str, list[bytes]], tmp_path: Path
) -> None:
    assert after.filterd is not None
    after.sink.clear()
    sent = {f"deferred{i}@example.com": raw for i, raw in enumerate(samples["ham"][:3])}
    after.filterd.stop()
    try:
        send_all(after, sent, tmp_path)  # Postfix queues them: its smtpd does not need filterd
        queue = after.postfix.wait_deferred(len(sent))
        reasons = [r.get("delay_reason", "") for m in queue for r in m["recipients"]]
        assert len(reasons) == len(sent)
        assert all("refused" in reason.lower() for reason in reasons), reasons
        assert after.sink.messages == []
    finally:
        after.filterd.start()
    after.postfix.flush()
    got = {m.rcpt_tos[0]: m for m in after.sink.wait_for(len(sent))}
    assert sorted(got) == sorted(sent)
    for rcpt, raw in sent.items():
        assert_intact(raw, got[rcpt])
        verdict(got[rcpt])
    after.postfix.wait_empty()


def test_xforward_carries_the_original_queue_id_to_the_reinjection_smtpd(
    after: MailPath, tmp_path: Path
) -> None:
    """Postfix sends XFORWARD to filterd and filterd passes it on (XFORWARD_README), so the
    re-injection smtpd logs the original client and queue id (Received: lines are not
    affected: Postfix always writes the real peer there)."""
    after.sink.clear()
    message = (b"From: a@example.org\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
               b"Message-ID: <xforward@example.org>\r\nSubject: who sent this\r\n\r\nhi\r\n")
    result = swaks(after.postfix.smtp_port, message, tmp_path, to="xforward@example.com")
    match = re.search(r"queued as ([0-9A-F]+)", result.data_reply())
    assert match, result.transcript
    after.sink.wait_for(1)
    after.postfix.wait_empty()
    assert f"orig_queue_id={match.group(1)}, orig_client=localhost[127.0.0.1]" in \
        after.postfix.maillog()


@pytest.mark.parametrize("utf8_envelope", [False, True], ids=["8bitmime", "smtputf8"])
def test_eight_bit_and_utf8_mail_pass_unconverted(after: MailPath, utf8_envelope: bool) -> None:
    """filterd advertises 8BITMIME and SMTPUTF8, so Postfix neither down-converts 8-bit
    bodies (which would break DKIM) nor bounces mail with UTF-8 addresses."""
    import smtplib

    after.sink.clear()
    rcpt = "josé@example.com" if utf8_envelope else "eight@example.com"
    message = ("From: José <jose@example.org>\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
               "Message-ID: <utf8@example.org>\r\nSubject: déjà vu\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
               "\r\nÇa marche très bien, 日本語も.\r\n").encode()
    options = ["BODY=8BITMIME", "SMTPUTF8"] if utf8_envelope else ["BODY=8BITMIME"]
    with smtplib.SMTP("127.0.0.1", after.postfix.smtp_port, timeout=60) as client:
        client.ehlo("client.test.invalid")
        refused = client.sendmail("sender@example.org", [rcpt], message, mail_options=options)
    assert refused == {}
    (got,) = after.sink.wait_for(1)
    assert got.rcpt_tos == [rcpt]
    assert_intact(message, got)
    verdict(got)
    after.postfix.wait_empty()


def test_a_burst_of_mail_through_postfix_is_all_delivered(after: MailPath) -> None:
    """Postfix's own load generator: 100 messages over 10 parallel sessions; Postfix then
    runs up to 10 deliveries into filterd at once (the filterd transport's maxproc)."""
    assert after.filterd is not None
    after.sink.clear()
    count = 100
    subprocess.run(
        [SMTP_SOURCE, "-s", "10", "-m", str(count), "-l", "2000", "-f", "load@example.org",
         "-t", "burst@example.com", "-M", "client.test.invalid",
         f"127.0.0.1:{after.postfix.smtp_port}"],
        check=True, timeout=120, capture_output=True,
    )
    got = after.sink.wait_for(count, timeout=120)
    assert len(got) == count
    assert all(m.rcpt_tos == ["burst@example.com"] for m in got)
    assert all(m.header("X-Spam-Status") for m in got)
    after.postfix.wait_empty()
    assert "Traceback" not in after.filterd.log()
