"""ESMTP behaviour Postfix relies on, limits, and failures that must cost one message only."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import smtplib
import subprocess
import time
from typing import Any

import aiosmtplib
import pytest
from prometheus_client import REGISTRY

from filterd import replies
from tests.fixtures.smtp import REPO, InProcessFilterd, wait_until
from tests.fixtures.clients import code, ours_and_rest, raw, reply_of, said, talk

SENDER = "sender@example.org"
MESSAGE = b"Subject: hello\r\n\r\nA short message.\r\n"


def test_ehlo_advertises_what_postfix_needs(filterd: Any) -> None:
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        client.ehlo("mta.example.org")
        for extension in ("size", "8bitmime", "smtputf8", "pipelining", "dsn", "xforward"):
            assert client.has_extn(extension), extension
        assert client.esmtp_features["size"] == str(50 * 1024 * 1024)
    greeting_host = talk(filterd.port, b"QUIT\r\n", expect=1)
    assert greeting_host == ["221 Bye"]


def test_greeting_uses_configured_hostname(make_filterd: Any) -> None:
    fd = make_filterd(hostname="filter.example.net")
    with raw(fd.port) as (_, reader):
        assert reader.readline().startswith(b"220 filter.example.net ")


def too_big_count() -> float:
    return REGISTRY.get_sample_value("filterd_messages_total", {"frontend": "smtp", "action": "too_big"}) or 0.0


def test_size_is_enforced_logged_and_counted(make_filterd: Any, sink: Any, caplog: Any) -> None:
    fd = make_filterd(max_message_size=4096)
    before = too_big_count()
    caplog.set_level(logging.INFO, logger="filterd")
    with smtplib.SMTP(fd.host, fd.port) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "4096"
        # Declared too big: refused at MAIL (RFC 1870).
        assert reply_of(client.mail(SENDER, ["SIZE=10000"])) == replies.S552_SIZE_DECLARED
        client.rset()
        # Not declared, but too big: refused after the data (aiosmtpd reads it all first).
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt("r@example.org")[0] == 250
        assert reply_of(client.data(MESSAGE + b"x" * 5000 + b"\r\n")) == replies.S552_TOO_MUCH_DATA
        # The next-hop transaction is reset too (just after the reply, hence the wait).
        wait_until(lambda: fd.gate.in_flight == 0, 10, "the transaction to end")
        assert client.sendmail(SENDER, ["r@example.org"], MESSAGE) == {}
    assert len(sink.wait_for(1)) == 1
    assert too_big_count() == before + 2
    lines = [r.getMessage() for r in caplog.records if "action=too_big" in r.getMessage()]
    assert len(lines) == 2, lines
    assert f"from=<{SENDER}> rcpts=0 size=10000 score=- action=too_big" in lines[0]
    assert repr(str(replies.S552_SIZE_DECLARED)) in lines[0]
    assert f"from=<{SENDER}> rcpts=1 size=4096 score=- action=too_big" in lines[1]
    assert repr(str(replies.S552_TOO_MUCH_DATA)) in lines[1]


def test_8bit_and_smtputf8_pass_through_with_their_parameters(filterd: Any, sink: Any) -> None:
    message = "Subject: Grüße\r\n\r\nLiebe Grüße, 日本語\r\n".encode()
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        client.sendmail("jörg@exämple.org", ["素晴@example.org"], message,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        client.sendmail(SENDER, ["r@example.org"], message, mail_options=["BODY=8BITMIME"])
    first, second = sink.wait_for(2)
    assert first.mail_from == "jörg@exämple.org"
    assert first.rcpt_tos == ["素晴@example.org"]
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(first.mail_params)
    assert ours_and_rest(first.data)[1] == message
    assert second.mail_params == ["BODY=8BITMIME"]
    assert ours_and_rest(second.data)[1] == message


def test_dsn_parameters_are_carried_verbatim(filterd: Any, sink: Any) -> None:
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        client.sendmail(SENDER, ["r@example.org"], MESSAGE, mail_options=["RET=HDRS", "ENVID=Ab+2B"],
                        rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;R@Example.org"])
    (received,) = sink.wait_for(1)
    assert {"RET=HDRS", "ENVID=Ab+2B"} <= set(received.mail_params)
    assert received.rcpt_params == [["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;R@Example.org"]]


def test_pipelined_transactions_with_rset_in_one_connection(filterd: Any, sink: Any) -> None:
    txn = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
    script = (b"EHLO client.example.org\r\n"
              + txn + b"Subject: 1\r\n\r\none\r\n.\r\n"
              + b"MAIL FROM:<x@example.org>\r\nRCPT TO:<y@example.org>\r\nRSET\r\n"
              + txn + b"Subject: 2\r\n\r\ntwo\r\n.\r\n"
              + txn + b"Subject: 3\r\n\r\nthree\r\n.\r\nQUIT\r\n")
    got = talk(filterd.port, script, expect=17)
    assert [code(r) for r in got] == [250, 250, 250, 354, 250, 250, 250, 250,
                                      250, 250, 354, 250, 250, 250, 354, 250, 221]
    received = sink.wait_for(3)
    assert [ours_and_rest(r.data)[1] for r in received] == [
        b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n", b"Subject: 3\r\n\r\nthree\r\n"]
    assert all(r.mail_from == "a@example.org" for r in received)
    wait_until(lambda: filterd.gate.in_flight == 0, 10, "no open transaction")


def test_recipient_limit_gives_452(make_filterd: Any, sink: Any) -> None:
    fd = make_filterd(max_recipients=3)
    rcpts = [f"r{i}@example.org" for i in range(5)]
    with smtplib.SMTP(fd.host, fd.port) as client:
        refused = client.sendmail(SENDER, rcpts, MESSAGE)
    assert {r: reply_of(got) for r, got in refused.items()} == {
        r: replies.S452_TOO_MANY_RECIPIENTS for r in rcpts[3:]}
    assert sink.wait_for(1)[0].rcpt_tos == rcpts[:3]


def test_many_recipients(filterd: Any, sink: Any) -> None:
    rcpts = [f"user{i}@example.org" for i in range(500)]
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        assert client.sendmail(SENDER, rcpts, MESSAGE) == {}
    assert sink.wait_for(1)[0].rcpt_tos == rcpts


def test_xforward_from_trusted_clients_reaches_the_next_hop(filterd: Any, sink: Any) -> None:
    script = (b"EHLO mta\r\nXFORWARD NAME=mail.example.com ADDR=192.0.2.7\r\n"
              b"XFORWARD PROTO=ESMTP HELO=mail.example.com\r\n"
              b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\ny\r\n.\r\n"
              b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\ny\r\n.\r\nQUIT\r\n")
    got = talk(filterd.port, script, expect=12)
    assert [code(r) for r in got] == [250, 250, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    first, second = sink.wait_for(2)
    assert first.xforward == {"NAME": "mail.example.com", "ADDR": "192.0.2.7",
                              "PROTO": "ESMTP", "HELO": "mail.example.com"}
    assert second.xforward == {}   # attributes last one transaction


def test_xforward_from_untrusted_clients_is_refused(make_filterd: Any) -> None:
    fd = make_filterd(xforward_networks=["192.0.2.0/24"])
    with smtplib.SMTP(fd.host, fd.port) as client:
        client.ehlo()
        assert not client.has_extn("xforward")
        assert reply_of(client.docmd("XFORWARD", "ADDR=10.0.0.1")) == replies.S550_XFORWARD_DENIED


def test_clients_outside_allowed_networks_get_554(make_filterd: Any, sink: Any) -> None:
    fd = make_filterd(allowed_networks=["192.0.2.0/24"])
    with raw(fd.port) as (_, reader):
        assert reader.readline().decode().rstrip() == str(replies.S554_ACCESS_DENIED)
        assert reader.readline() == b""   # and the connection is closed
    assert sink.connections == 0


def test_connection_limit_gives_421(make_filterd: Any) -> None:
    fd = make_filterd(max_connections=2)
    held = [smtplib.SMTP(fd.host, fd.port) for _ in range(2)]
    try:
        with raw(fd.port) as (_, reader):
            line = reader.readline().decode().rstrip()
        assert line == str(replies.S421_TOO_MANY_CONNECTIONS)
    finally:
        for client in held:
            client.quit()
    wait_until(lambda: fd.gate.sessions == 0, 10, "sessions to close")
    with smtplib.SMTP(fd.host, fd.port) as client:    # the slots are free again
        assert client.noop()[0] == 250


def test_a_client_greeted_once_stopping_began_gets_one_421(make_filterd: Any) -> None:
    """Daemon.stop (SIGTERM) closes the gate at once: a connection the loop still accepts
    before the listening socket is closed gets a single 421, never a 220 and then the
    drain's 421 (RFC 5321 3.1: a server that cannot serve says 421 instead of greeting)."""
    fd = make_filterd()
    with raw(fd.port) as (_, reader):
        assert reader.readline().startswith(b"220")          # greeted before the stop
        fd.run(_stop_begins(fd))                             # Daemon.stop, up to its drain
        assert fd.gate.closing
        with raw(fd.port) as (_, late):
            assert late.readline().decode().rstrip() == str(replies.S421_SHUTTING_DOWN)
            assert late.readline() == b""                    # and closed


async def _stop_begins(fd: Any) -> None:
    """Daemon.stop's first step alone (the gate), with the listener kept open: the moment
    between SIGTERM and the drain, when the loop may still accept a queued connection."""
    stopping = fd.daemon.stopping
    fd.daemon.stopping = asyncio.Event()     # not the one serve() waits on: no drain yet
    fd.daemon.stop()
    fd.daemon.stopping = stopping


def test_idle_clients_get_421_and_free_their_slot(make_filterd: Any) -> None:
    fd = make_filterd(timeouts={"idle": 0.5}, max_connections=1)
    with raw(fd.port) as (_, reader):
        assert reader.readline().startswith(b"220")
        assert reader.readline().decode().rstrip() == str(replies.S421_IDLE_TIMEOUT)
    wait_until(lambda: fd.gate.sessions == 0, 10, "the idle session to close")
    with smtplib.SMTP(fd.host, fd.port) as client:
        assert client.noop()[0] == 250


def test_client_vanishing_mid_data_leaves_the_daemon_healthy(filterd: Any, sink: Any) -> None:
    for cut in (b"DATA\r\nSubject: half\r\n\r\nsome of the bo", b"RCPT TO:<c@d>\r\n"):
        with raw(filterd.port) as (sock, reader):
            reader.readline()
            sock.sendall(b"EHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n" + cut)
            time.sleep(0.2)
    wait_until(lambda: filterd.gate.sessions == 0, 10, "sessions to close")
    assert filterd.gate.in_flight == 0
    with smtplib.SMTP(filterd.host, filterd.port) as client:
        assert client.sendmail(SENDER, ["r@example.org"], MESSAGE) == {}
    assert len(sink.wait_for(1)) == 1
    assert sink.received[0].rcpt_tos == ["r@example.org"]


@pytest.mark.slow
def test_200_concurrent_sessions_all_delivered(filterd: Any, sink: Any) -> None:
    async def one(i: int) -> None:
        message = b"Subject: n%d\r\n\r\nmessage %d\r\n" % (i, i)
        await aiosmtplib.send(message, sender=SENDER, recipients=[f"r{i}@example.org"],
                              hostname=filterd.host, port=filterd.port, timeout=120,
                              start_tls=False)

    async def all_of_them() -> None:
        await asyncio.gather(*(one(i) for i in range(200)))

    asyncio.run(all_of_them())
    received = sink.wait_for(200)
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(f"r{i}@example.org"
                                                           for i in range(200))
    for r in received:
        i = r.rcpt_tos[0][1:].split("@")[0]
        assert ours_and_rest(r.data)[1] == b"Subject: n%s\r\n\r\nmessage %s\r\n" % (
            i.encode(), i.encode())


class BrokenScorer:
    """The shipped scorer whose inference fails: a fault we cannot cause for real."""

    def __init__(self, real: Any) -> None:
        self.version, self.thresholds, self.prepare = real.version, real.thresholds, real.prepare
        self.provider = real.provider
        self.manifest, self.wide_weights = real.manifest, real.wide_weights   # what learning reads

    def infer(self, batch: Any) -> list[float]:
        raise RuntimeError("injected inference failure")


@pytest.mark.parametrize("on_error", ["tempfail", "accept"])
def test_scoring_failure(make_filterd: Any, sink: Any, scorer: Any, on_error: str,
                         caplog: Any) -> None:
    fd = make_filterd(scoring={"on_error": on_error})
    broken = InProcessFilterd(fd.config, BrokenScorer(scorer)).start()
    try:
        with smtplib.SMTP(broken.host, broken.port) as client:
            if on_error == "tempfail":
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail(SENDER, ["r@example.org"], MESSAGE)
                assert said(refused.value) == replies.S451_SCORING_FAILED
            else:
                assert client.sendmail(SENDER, ["r@example.org"], MESSAGE) == {}
                ours, rest = ours_and_rest(sink.wait_for(1)[0].data)
                assert ours == {"X-Spam-Flag": "NO", "X-Spam-Status": "Unknown"}
                assert rest == MESSAGE
        assert broken.gate.in_flight == 0
    finally:
        broken.stop()
    assert sink.received == [] if on_error == "tempfail" else len(sink.received) == 1
    assert any("injected inference failure" in str(r.exc_info) for r in caplog.records)


def test_null_sender_and_odd_addresses_are_relayed_literally(filterd: Any, sink: Any) -> None:
    script = (b"EHLO t\r\n"
              b"MAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nSubject: bounce\r\n\r\nx\r\n.\r\n"
              b"MAIL FROM:<x(y@example.org> SIZE=30\r\nRCPT TO:<@relay.example:u@example.org>\r\n"
              b"DATA\r\nSubject: odd\r\n\r\nx\r\n.\r\nQUIT\r\n")
    got = talk(filterd.port, script, expect=10)
    assert [code(r) for r in got] == [250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    bounce, odd = sink.wait_for(2)
    assert (bounce.mail_from, bounce.rcpt_tos) == ("<>", ["postmaster"])
    assert (odd.mail_from, odd.rcpt_tos) == ("x(y@example.org", ["u@example.org"])


def test_addresses_with_control_characters_get_553(filterd: Any, sink: Any) -> None:
    got = talk(filterd.port, b"EHLO t\r\nMAIL FROM:<a\x01b@example.org>\r\n"
               b"MAIL FROM:<ok@example.org>\r\nRCPT TO:<x\x7f@example.org>\r\nQUIT\r\n", expect=5)
    assert [code(r) for r in got] == [250, 553, 250, 553, 221]


def test_swaks_pipelining_client(filterd: Any, sink: Any, tmp_path: Any) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: from swaks\r\n\r\n.leading dot\r\nbody\r\n")
    done = subprocess.run(
        ["swaks", "--server", filterd.host, "--port", str(filterd.port), "--pipeline",
         "--from", "a@example.org", "--to", "b@example.org,c@example.org",
         "--data", str(message), "--timeout", "60"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == ["b@example.org", "c@example.org"]
    # swaks ends the data with an extra CRLF of its own (it does so straight into a sink too).
    assert ours_and_rest(received.data)[1] == message.read_bytes() + b"\r\n"


class SlowScorer(BrokenScorer):
    """The shipped scorer, made slower than timeouts.scoring: a fault we cannot cause for real."""

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self.real = real

    def infer(self, batch: Any) -> list[float]:
        time.sleep(1.5)
        return list(self.real.infer(batch))


@pytest.mark.parametrize("on_error", ["tempfail", "accept"])
def test_slow_scoring_is_cut_off_at_the_scoring_timeout(make_filterd: Any, sink: Any,
                                                        scorer: Any, on_error: str) -> None:
    # In a scoring thread: on the loop (the CPU default), a batch cannot be cut short.
    fd = make_filterd(timeouts={"scoring": 0.3}, scoring={"on_error": on_error, "run_on": "thread"})
    slow = InProcessFilterd(fd.config, SlowScorer(scorer)).start()
    try:
        with smtplib.SMTP(slow.host, slow.port) as client:
            client.ehlo()
            client.mail(SENDER)
            client.rcpt("r@example.org")
            reply = client.data(MESSAGE)
        if on_error == "tempfail":
            assert reply_of(reply) == replies.S451_SCORING_FAILED
            assert sink.received == []
        else:
            assert reply[0] == 250
            assert ours_and_rest(sink.wait_for(1)[0].data)[0]["X-Spam-Status"] == "Unknown"
    finally:
        slow.stop()


def test_reconfigure_applies_to_new_transactions_only(filterd: Any, sink: Any) -> None:
    with smtplib.SMTP(filterd.host, filterd.port) as before, \
            smtplib.SMTP(filterd.host, filterd.port) as after:
        before.ehlo()
        before.mail(SENDER)
        before.rcpt("r@example.org")

        async def reject_everything() -> None:
            config = dataclasses.replace(
                filterd.config, policy=dataclasses.replace(filterd.config.policy, tag_at=0.0,
                                                           reject_at=0.0))
            filterd.handler.reconfigure(config, filterd.handler.state.batcher)

        filterd.run(reject_everything())
        assert before.data(MESSAGE)[0] == 250       # started under the old config
        with pytest.raises(smtplib.SMTPDataError) as refused:
            after.sendmail(SENDER, ["r@example.org"], MESSAGE)
        assert said(refused.value) == replies.S550_SPAM_REJECTED
    assert len(sink.wait_for(1)) == 1


def test_aiosmtpd_warnings_are_the_documented_ones(filterd: Any, caplog: Any) -> None:
    """An unknown command: aiosmtpd answers and warns under `mail.log`, as docs/operations.md says."""
    caplog.set_level(logging.WARNING)
    got = talk(filterd.port, b"FOO bar\r\nQUIT\r\n", expect=2)
    assert got == ['500 Error: command "FOO" not recognized', "221 Bye"]
    warnings = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0][0] == "mail.log", warnings
    assert warnings[0][1].endswith("unrecognised: FOO")
    documented = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "mail.log: ('192.0.2.7', 41234) unrecognised: FOO" in documented
    assert "too many bogus commands" in documented
