"""aiosmtpd hooks: EHLO/MAIL/RCPT/DATA → verdict → reply.

One mail transaction, as seen from here:

    MAIL  take a next-hop connection (relay.py), pass MAIL on, answer with its result
    RCPT  pass each recipient on; the next hop's reply is the client's reply
    DATA  score (batcher.py) → reject (RSET the next hop, 550) or tag (verdict.py) and
          send DATA; answer the next hop's reply to the final dot, or 451 on trouble
    RSET/QUIT/disconnect  RSET or drop the next-hop transaction

Every hook catches what it did not expect and answers 451 (STYLE habit 7):
`CancelledError` (client gone, shutdown) is re-raised after cleanup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import MISSING

from filterd import verdict
from filterd.service import metrics
from filterd.smtp import replies
from filterd.smtp.smtpd import XFORWARD_ATTRS, parse_xforward, smtp_factory

__all__ = ["FilterHandler", "smtp_factory"]

log = logging.getLogger(__name__)
_ids = itertools.count(1)
_EHLO_EXTRA = ["250-PIPELINING", "250-DSN"]


@dataclass(frozen=True)
class State:
    """What a transaction uses from start to end, even if a reload swaps it meanwhile."""

    config: Any
    batcher: Any
    policy: verdict.Policy


def _networks(values: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(str(v), strict=False) for v in values or ()]


def _address(peer: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's IP address (an IPv4-mapped one as IPv4); None for a UNIX socket or stranger."""
    try:
        addr = ipaddress.ip_address(peer[0].split("%")[0])
    except (TypeError, ValueError, IndexError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def _in(addr: Any, networks: list[Any]) -> bool:
    return addr is not None and any(addr in net for net in networks)


class FilterHandler:
    """The hooks aiosmtpd calls; one instance serves every session of a worker."""

    def __init__(self, config: Any, batcher: Any, relay: Any) -> None:
        self.relay = relay
        self.sessions = 0
        self.in_flight = 0            # open transactions (tests wait for it to reach 0)
        self._prefix = f"{os.getpid() % 100000:x}."
        self.reconfigure(config, batcher)

    def reconfigure(self, config: Any, batcher: Any) -> None:
        """New config/scorer for new transactions; those in flight keep what they started with."""
        policy = verdict.Policy.resolve(config.policy.tag_at, config.policy.reject_at,
                                        batcher.scorer.thresholds,
                                        str(getattr(batcher.scorer, "version", "")))
        self.state = State(config, batcher, policy)
        self.allowed = _networks(config.allowed_networks)
        self.trusted = _networks(config.xforward_networks)

    # Connection level (called by smtpd.FilterSMTP).

    def admit(self, session: Any) -> str | None:
        """None to greet the client, else the reply that refuses it."""
        session.id = f"{self._prefix}{next(_ids):x}"
        session.address = _address(session.peer)   # parsed once, checked again at EHLO/XFORWARD
        if not _in(session.address, self.allowed):
            log.warning("%s %s refused: not in allowed_networks", session.id, session.peer)
            return replies.S554_ACCESS_DENIED
        if self.sessions >= self.state.config.max_connections:
            log.warning("%s %s refused: max_connections reached", session.id, session.peer)
            return replies.S421_TOO_MANY_CONNECTIONS
        session.admitted = True
        self.sessions += 1
        metrics.IN_FLIGHT.inc()
        return None

    def session_closed(self, session: Any) -> None:
        if not getattr(session, "admitted", False):
            return
        session.admitted = False
        self.sessions -= 1
        metrics.IN_FLIGHT.dec()
        if session.txn is not None:
            session.txn.close()  # the client vanished mid-transaction: drop, don't reuse
            self._end(session)

    def xforward(self, session: Any, envelope: Any, arg: str) -> str:
        if not _in(session.address, self.trusted):
            return replies.S550_XFORWARD_DENIED
        if envelope.mail_from is not None:
            return replies.S503_XFORWARD_IN_TRANSACTION
        items = parse_xforward(arg)
        if items is None:
            return replies.S501_XFORWARD_SYNTAX
        session.xforward.update(items)
        return replies.S250_XFORWARD_OK

    async def handle_exception(self, error: Exception) -> str:
        log.error("unexpected error in an SMTP session", exc_info=error)
        return replies.S451_INTERNAL_ERROR

    # Hooks.

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        await self.abort(session)   # EHLO resets a transaction (RFC 5321 4.1.4)
        session.host_name = hostname
        extra = list(_EHLO_EXTRA)
        if _in(session.address, self.trusted):
            extra.append("250-XFORWARD " + " ".join(XFORWARD_ATTRS))
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> Any:
        await self.abort(session)
        return MISSING

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        await self.abort(session)
        return replies.S250_RESET_OK

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> Any:
        await self.abort(session)
        return MISSING

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        await self.abort(session)
        state = self.state
        txn = await self.relay.open(session.xforward)
        session.client = session.xforward.get("ADDR") or session.peer[0]
        session.xforward = {}        # XFORWARD attributes last one transaction
        try:
            reply = await txn.mail(address, [*mail_options, *server.extra_params])
        except BaseException:   # the client went away meanwhile (CancelledError)
            txn.close()
            raise
        if not reply.startswith("2"):
            txn.close()
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        session.txn, session.state = txn, state
        self.in_flight += 1
        return replies.S250_SENDER_OK

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if session.txn is None:
            return replies.S451_NEXT_HOP_LOST
        if len(envelope.rcpt_tos) >= session.state.config.max_recipients:
            return replies.S452_TOO_MANY_RECIPIENTS   # RFC 5321 4.5.3.1.8
        reply = await session.txn.rcpt(address, [*rcpt_options, *server.extra_params])
        if not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.S250_RECIPIENT_OK

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        txn = session.txn
        if txn is None:
            return replies.S451_NEXT_HOP_LOST
        record = Record(session, envelope)
        try:
            reply = await self._deliver(session.state, txn, envelope.content, record)
        except asyncio.CancelledError:
            txn.close()
            raise
        except Exception:
            log.exception("%s %s error handling a message", session.id, session.peer)
            txn.close()
            record.action, reply = "tempfail", replies.S451_INTERNAL_ERROR
        finally:
            if session.txn is txn:
                self._end(session)
        record.log(reply)
        return reply

    # The verdict.

    async def _deliver(self, state: State, txn: Any, data: bytes, record: Record) -> str:
        config = state.config
        judged = await self._verdict(state, data, record)
        if judged is None:
            await txn.abort()
            record.action = "tempfail"
            return replies.S451_SCORING_FAILED
        if judged.rejected:
            await txn.abort()
            record.action = "rejected"
            return replies.S550_SPAM_REJECTED   # before-queue: all recipients or none
        tagged = verdict.tag(data, judged, config.policy.subject_prefix)
        start = time.perf_counter()
        try:
            reply = await asyncio.wait_for(txn.data(tagged), config.timeouts.next_hop)
        except TimeoutError:
            txn.close()
            metrics.NEXT_HOP_ERRORS.labels("timeout").inc()
            reply = replies.S451_NEXT_HOP_TIMEOUT
        record.relay_s = time.perf_counter() - start
        metrics.RELAY_SECONDS.observe(record.relay_s)
        if not reply.startswith("2"):
            record.action = "relay_failed"
        return reply

    async def _verdict(self, state: State, data: bytes, record: Record) -> verdict.Verdict | None:
        """Score the message; None means "answer 451" (scoring failed, on_error: tempfail)."""
        config = state.config
        if len(data) > config.scoring.max_bytes:
            record.action = "skipped"
            return verdict.Verdict("Skipped")
        start = time.perf_counter()
        try:
            score = await asyncio.wait_for(state.batcher.score(data), config.timeouts.scoring)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s scoring failed", record.session.id)
            if config.scoring.on_error != "accept":
                return None
            record.action = "unscored"
            return verdict.Verdict("Unknown")
        record.scoring_s = time.perf_counter() - start
        record.score = score
        metrics.SCORING_SECONDS.observe(record.scoring_s)
        metrics.SCORE.observe(score)
        judged = state.policy.judge(score)
        record.action = "tagged" if judged.flagged else "ham"
        return judged

    # Transaction bookkeeping.

    async def abort(self, session: Any) -> None:
        """End the session's transaction, if any: RSET the next hop and pool the connection."""
        if session.txn is not None:
            txn = session.txn
            self._end(session)
            await txn.abort()

    def _end(self, session: Any) -> None:
        session.txn = session.state = None
        self.in_flight -= 1


class Record:
    """The facts of one message for its single INFO log line and the metrics."""

    __slots__ = ("action", "envelope", "relay_s", "score", "scoring_s", "session")

    def __init__(self, session: Any, envelope: Any) -> None:
        self.session, self.envelope = session, envelope
        self.score: float | None = None
        self.action = "tempfail"
        self.scoring_s = self.relay_s = 0.0

    def log(self, reply: str) -> None:
        metrics.MESSAGES.labels(self.action).inc()
        session, envelope = self.session, self.envelope
        log.info(
            "%s client=%s from=<%s> rcpts=%d size=%d score=%s action=%s scoring_ms=%.1f "
            "relay_ms=%.1f reply=%r",
            session.id, session.client, envelope.mail_from, len(envelope.rcpt_tos),
            len(envelope.content or b""), "-" if self.score is None else verdict.format_score(self.score),
            self.action, self.scoring_s * 1000, self.relay_s * 1000, reply.split("\r\n")[-1],
        )
