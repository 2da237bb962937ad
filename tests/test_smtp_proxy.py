"""End to end over loopback: smtplib / raw sockets → filterd (in-process) → recording sink.

The model is the shipped one; the sink is a real aiosmtpd server that can be told to
misbehave (tests/fixtures/smtp.py).
"""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import pytest

from filterd import replies
from filterd.replies import Reply
from tests.fixtures.clients import code, corpus_sample, ours_and_rest, said, talk

SENDER = "sender@example.org"


@pytest.fixture(scope="module")
def ham_and_spam(corpus_dir: Path) -> tuple[list[bytes], list[bytes]]:
    return (corpus_sample(corpus_dir, "20030228_easy_ham.tar.bz2", 10),
            corpus_sample(corpus_dir, "20030228_spam.tar.bz2", 10))


# --------------------------------------------------------------------------- tagging


@pytest.mark.corpus
def test_corpus_ham_and_spam_arrive_byte_identical_plus_headers(filterd: Any, sink: Any,
                                                               ham_and_spam: Any, scorer: Any,
                                                               caplog: Any) -> None:
    ham, spam = ham_and_spam
    messages = ham + spam
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        for message in messages:
            assert client.sendmail(SENDER, ["rcpt@example.org"], message) == {}
    got = sink.wait_for(len(messages))
    scores = []
    for message, received in zip(messages, got, strict=True):
        ours, rest = ours_and_rest(received.data)
        assert rest == message
        score = float(ours["X-Spam-Score"])
        assert score == pytest.approx(scorer.score([message])[0], abs=1e-3)
        assert ours["X-Spam-Status"].startswith(("Yes, score=", "No, score="))
        assert f"model={scorer.version}" in ours["X-Spam-Status"]
        assert ours["X-Spam-Flag"] == ("YES" if score >= scorer.thresholds.tag else "NO")
        scores.append(score)
    # The shipped model tells these apart.
    assert sum(scores[10:]) > sum(scores[:10])
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_forged_spam_headers_are_renamed_and_body_untouched(filterd: Any, sink: Any) -> None:
    message = (b"X-Spam-Flag: NO\r\nx-spam-status: No, score=0.0\r\nSubject: hello\r\n"
               b"X-Spam-Score:\r\n  -5\r\n\r\nX-Spam-Flag: NO in the body stays\r\n")
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        client.sendmail(SENDER, ["rcpt@example.org"], message)
    ours, rest = ours_and_rest(sink.wait_for(1)[0].data)
    assert set(ours) == {"X-Spam-Flag", "X-Spam-Score", "X-Spam-Status"}
    assert rest == (b"X-Spam-Untrusted-Flag: NO\r\nX-Spam-Untrusted-status: No, score=0.0\r\n"
                    b"Subject: hello\r\nX-Spam-Untrusted-Score:\r\n  -5\r\n\r\n"
                    b"X-Spam-Flag: NO in the body stays\r\n")


def test_dot_stuffing_bare_cr_lf_and_long_lines_survive(filterd: Any, sink: Any) -> None:
    body = (b"Subject: odd\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
            b"bare\nLF and bare\rCR and\r\r\n\n.after bare LF\r\n"
            + b"a" * 999 + b"\r\n" + b"b" * 10_000 + b"\r\n\x00nul\r\n")
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    replies_ = talk(filterd.port, b"EHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
                    + stuffed + b".\r\nQUIT\r\n", expect=6)
    assert code(replies_[4]) == 250, replies_
    _, rest = ours_and_rest(sink.wait_for(1)[0].data)
    assert rest == body


def test_empty_message_and_message_without_headers(filterd: Any, sink: Any) -> None:
    got = talk(filterd.port, b"EHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\n"
               b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\njust a line\r\n.\r\nQUIT\r\n",
               expect=10)
    assert [code(r) for r in got] == [250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    first, second = sink.wait_for(2)
    assert ours_and_rest(first.data)[1] == b""
    assert ours_and_rest(second.data)[1] == b"just a line\r\n"


def test_subject_prefix_on_flagged_mail(make_filterd: Any, sink: Any) -> None:
    fd = make_filterd(policy={"tag_at": 0.0, "subject_prefix": "[SPAM] "})
    with smtplib.SMTP(fd.host, fd.port) as client:
        client.sendmail(SENDER, ["r@example.org"], b"Subject: offer\r\n\r\nbody\r\n")
    ours, rest = ours_and_rest(sink.wait_for(1)[0].data)
    assert ours["X-Spam-Flag"] == "YES"
    assert rest == b"Subject: [SPAM] offer\r\n\r\nbody\r\n"


def test_messages_above_scoring_max_bytes_are_relayed_unscored(make_filterd: Any,
                                                               sink: Any) -> None:
    fd = make_filterd(scoring={"max_bytes": 2000})
    message = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100
    with smtplib.SMTP(fd.host, fd.port) as client:
        client.sendmail(SENDER, ["r@example.org"], message)
    ours, rest = ours_and_rest(sink.wait_for(1)[0].data)
    assert ours == {"X-Spam-Flag": "NO", "X-Spam-Status": "Skipped"}
    assert rest == message


# --------------------------------------------------------------------------- verdicts


@pytest.mark.corpus
def test_reject_mode_answers_550_and_relays_nothing(make_filterd: Any, sink: Any,
                                                    ham_and_spam: Any, scorer: Any) -> None:
    spam = max(ham_and_spam[1], key=lambda m: scorer.score([m])[0])
    ham = min(ham_and_spam[0], key=lambda m: scorer.score([m])[0])
    threshold = round(scorer.score([spam])[0] - 0.001, 3)
    assert scorer.score([ham])[0] < threshold
    fd = make_filterd(policy={"tag_at": threshold, "reject_at": threshold})
    with smtplib.SMTP(fd.host, fd.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, ["a@example.org", "b@example.org"], spam)
        assert said(refused.value) == replies.S550_SPAM_REJECTED
        # The session goes on, and the next hop connection was reset, not left mid-transaction.
        assert client.sendmail(SENDER, ["a@example.org"], ham) == {}
    assert len(sink.wait_for(1)) == 1
    assert ours_and_rest(sink.received[0].data)[1] == ham


# --------------------------------------------------------------------------- next hop trouble


def test_next_hop_down_gives_451(make_filterd: Any, sink: Any) -> None:
    sink.stop()   # nothing listens on its port any more
    fd = make_filterd(timeouts={"next_hop_connect": 2})
    with smtplib.SMTP(fd.host, fd.port) as client, \
            pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail(SENDER, ["r@example.org"], b"Subject: x\r\n\r\ny\r\n")
    assert said(refused.value) == replies.S451_NEXT_HOP_UNREACHABLE
    assert fd.gate.in_flight == 0


def test_slow_next_hop_gives_451_within_the_timeout(make_filterd: Any, sink: Any) -> None:
    sink.behave(delay=5)
    fd = make_filterd(timeouts={"next_hop": 1})
    with smtplib.SMTP(fd.host, fd.port) as client, \
            pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(SENDER, ["r@example.org"], b"Subject: x\r\n\r\ny\r\n")
    assert said(refused.value) == replies.S451_NEXT_HOP_TIMEOUT


@pytest.mark.parametrize("reply", [Reply(452, "4.3.1 Insufficient system storage"),
                                   Reply(554, "5.7.1 Content refused")])
def test_next_hop_data_replies_are_passed_on(make_filterd: Any, sink: Any, reply: Reply) -> None:
    sink.behave(data=str(reply))
    fd = make_filterd()
    with smtplib.SMTP(fd.host, fd.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, ["r@example.org"], b"Subject: x\r\n\r\ny\r\n")
        assert said(refused.value) == reply
        sink.behave()
        assert client.sendmail(SENDER, ["r@example.org"], b"Subject: x\r\n\r\ny\r\n") == {}
    assert len(sink.wait_for(1)) == 1


def test_next_hop_mail_4xx_is_passed_on(make_filterd: Any, sink: Any) -> None:
    sink.behave(mail="451 4.3.0 Try later")
    fd = make_filterd()
    with smtplib.SMTP(fd.host, fd.port) as client, \
            pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail(SENDER, ["r@example.org"], b"Subject: x\r\n\r\ny\r\n")
    assert (refused.value.smtp_code, refused.value.smtp_error) == (451, b"4.3.0 Try later")


def test_next_hop_vanishing_mid_transaction_gives_451(make_filterd: Any, sink: Any) -> None:
    sink.behave(drop="DATA")
    fd = make_filterd()
    with smtplib.SMTP(fd.host, fd.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, ["r@example.org"], b"Subject: x\r\n\r\ny\r\n")
        assert refused.value.smtp_code == 451
        sink.behave()
        assert client.sendmail(SENDER, ["r@example.org"], b"Subject: x\r\n\r\ny\r\n") == {}


def test_per_recipient_replies_reach_the_client(make_filterd: Any, sink: Any) -> None:
    sink.behave(rcpt={"gone@example.org": "550 5.1.1 No such user",
                      "full@example.org": "452 4.2.2 Mailbox full"})
    fd = make_filterd()
    rcpts = ["ok1@example.org", "gone@example.org", "full@example.org", "ok2@example.org"]
    with smtplib.SMTP(fd.host, fd.port) as client:
        refused = client.sendmail(SENDER, rcpts, b"Subject: x\r\n\r\ny\r\n")
    assert refused == {"gone@example.org": (550, b"5.1.1 No such user"),
                       "full@example.org": (452, b"4.2.2 Mailbox full")}
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == ["ok1@example.org", "ok2@example.org"]


def test_next_hop_connections_are_reused(filterd: Any, sink: Any) -> None:
    for _ in range(3):
        with smtplib.SMTP(filterd.host, filterd.port) as client:
            for _ in range(3):
                client.sendmail(SENDER, ["r@example.org"], b"Subject: x\r\n\r\ny\r\n")
    assert len(sink.wait_for(9)) == 9
    assert sink.connections == 1


def test_pooled_connection_closed_by_the_next_hop_is_replaced(filterd: Any, sink: Any,
                                                              caplog: Any) -> None:
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        client.sendmail(SENDER, ["r@example.org"], b"Subject: 1\r\n\r\ny\r\n")
        sink.wait_for(1)
        sink.disconnect_all()
        assert client.sendmail(SENDER, ["r@example.org"], b"Subject: 2\r\n\r\ny\r\n") == {}
    assert len(sink.wait_for(2)) == 2
    assert sink.connections == 2
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
