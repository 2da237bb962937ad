"""aiosmtpd hooks: EHLO/MAIL/RCPT/DATA → verdict → reply.

One mail transaction, as seen from here:

    MAIL  take a next-hop connection (relay.py), pass MAIL on, answer with its result
    RCPT  pass each recipient on; the next hop's reply is the client's reply
    DATA  score (batcher.py) → reject (RSET the next hop, 550) or tag (verdict.py) and
          send DATA; answer the next hop's reply to the final dot, or 451 on trouble
    RSET/QUIT  RSET the next-hop transaction (a lost client: smtpd.py drops it, no hook)

Every hook catches what it did not expect and answers 451 (STYLE habit 7):
`CancelledError` (client gone, shutdown) is re-raised after cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiosmtpd.smtp import MISSING

from filterd import metrics, replies, verdict
from filterd.batcher import Batcher
from filterd.config import Config
from filterd.frontends.smtp.gate import XFORWARD_ATTRS
from filterd.frontends.smtp.relay import Relay
from filterd.replies import Reply
from filterd.scan import Record, State, scan

log = logging.getLogger(__name__)
_EHLO_EXTRA = ["250-PIPELINING", "250-DSN"]


class FilterHandler:
    """The hooks aiosmtpd calls; one instance serves every session of a worker."""

    def __init__(self, config: Config, batcher: Batcher, relay: Relay) -> None:
        self.relay = relay
        self.reconfigure(config, batcher)

    def reconfigure(self, config: Config, batcher: Batcher) -> None:
        """New config/scorer for new transactions; those in flight keep what they started with."""
        self.state = State.build(config, batcher)

    # Hooks. Each returns the reply line(s) aiosmtpd sends: str(Reply), or MISSING for
    # aiosmtpd's own reply.

    async def handle_exception(self, error: Exception) -> str:
        log.error("unexpected error in an SMTP session", exc_info=error)
        return str(replies.S451_INTERNAL_ERROR)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        await self._abort(session)   # EHLO resets a transaction (RFC 5321 4.1.4)
        session.host_name = hostname
        extra = list(_EHLO_EXTRA)
        if server.gate.trusts(session):
            extra.append("250-XFORWARD " + " ".join(XFORWARD_ATTRS))
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> Any:
        await self._abort(session)
        return MISSING

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        await self._abort(session)
        return str(replies.S250_RESET_OK)

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> Any:
        await self._abort(session)
        return MISSING

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        await self._abort(session)
        state = self.state
        txn = await self.relay.open(session.xforward)
        session.client = session.xforward.get("ADDR") or session.peer[0]
        session.xforward = {}        # XFORWARD attributes last one transaction
        try:
            reply = await txn.mail(address, [*mail_options, *server.extra_params])
        except BaseException:   # the client went away meanwhile (CancelledError)
            txn.close()
            raise
        if not reply.positive:
            txn.close()
            return str(reply)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        session.txn, session.state = txn, state
        return str(replies.S250_SENDER_OK)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if session.txn is None:
            return str(replies.S451_NEXT_HOP_LOST)
        if len(envelope.rcpt_tos) >= session.state.config.max_recipients:
            return str(replies.S452_TOO_MANY_RECIPIENTS)   # RFC 5321 4.5.3.1.8
        reply = await session.txn.rcpt(address, [*rcpt_options, *server.extra_params])
        if not reply.positive:
            return str(reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return str(replies.S250_RECIPIENT_OK)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        txn = session.txn
        if txn is None:
            return str(replies.S451_NEXT_HOP_LOST)
        record = Record("smtp", session.id, session.client, envelope.mail_from,
                        len(envelope.rcpt_tos), len(envelope.content or b""))
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
                session.end_transaction()
        record.log(reply)
        return str(reply)

    # The verdict.

    async def _deliver(self, state: State, txn: Any, data: bytes, record: Record) -> Reply:
        config = state.config
        outcome = await scan(state, data, record, explain=config.policy.report)
        if outcome.refusal is not None or outcome.edits is None:
            await txn.abort()   # before-queue, a 550 refuses all recipients or none
            return outcome.refusal or replies.S451_SCORING_FAILED
        head, body_start = verdict.apply_parts(data, outcome.edits)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(config.timeouts.next_hop):
                reply = await txn.data(head, data, body_start)
        except TimeoutError:
            txn.close()
            metrics.NEXT_HOP_ERRORS.labels("timeout").inc()
            reply = replies.S451_NEXT_HOP_TIMEOUT
        record.relay_s = time.perf_counter() - start
        metrics.RELAY_SECONDS.observe(record.relay_s)
        if not reply.positive:
            record.action = "relay_failed"
        return reply

    # Transaction bookkeeping.

    async def _abort(self, session: Any) -> None:
        """End the session's transaction, if any: RSET the next hop and pool the connection."""
        txn = session.end_transaction()
        if txn is not None:
            await txn.abort()
