"""The spamd front-end: SpamAssassin's spamd protocol, as `spamc` and Exim's `spam =` speak it.

A request (spamd's PROTOCOL file, SPAMC/1.x):

    CHECK SPAMC/1.5\\r\\n           verb: CHECK SYMBOLS REPORT REPORT_IFSPAM PROCESS HEADERS PING
    Content-length: 1234\\r\\n      required for all but PING; other headers (User, ...) ignored
    \\r\\n
    <1234 bytes of message>

and the answer (the `Spam:` line first, where Exim's parser looks for it):

    SPAMD/1.5 0 EX_OK\\r\\n
    Spam: True ; 12.3 / 5.0\\r\\n
    Content-length: N\\r\\n         when there is a body (SYMBOLS, REPORT, PROCESS, HEADERS)
    \\r\\n
    <body>

Errors are `SPAMD/1.5 <sysexits code> <text>` and close the connection: 76 EX_PROTOCOL
for a malformed request, 65 EX_DATAERR for one over max_message_size, 75 EX_TEMPFAIL when
scoring failed (spamc then passes the message through unchanged; Exim defers).

The score scale. spamd speaks SpamAssassin points, and Exim compares `$spam_score_int`
(points × 10) against numbers in its ACLs, so we map the model's probability onto points
with fixed anchors: 5.0 at the tag threshold (SpamAssassin's customary required_score)
and 10.0 at the reject threshold, linear in log-odds between and beyond, clamped to ±50.
So `Spam: True` ⇔ points ≥ 5.0 ⇔ `$spam_score_int` ≥ 50, and the reject threshold is
`$spam_score_int` ≥ 100, whatever model is loaded. Points are rounded down to 0.1, so a
score just under the tag threshold never prints as 5.0.

`Spam: True/False` and the threshold after the slash follow the same Policy as the proxy
and the milter: with `policy.tag_at: null` filterd never flags, so it says `Spam: False`
and a threshold of NEVER_POINTS (1000.0, above any score it can print). Exim's `spam =`
condition compares score and threshold itself, so it too is then never true. The points
stay on the model's scale (anchored at the model's calibrated tag and reject thresholds
wherever the policy switched one off), so an ACL on `$spam_score_int` still works.
"""

from __future__ import annotations

import asyncio
import logging
import math

from filterd import verdict
from filterd.pipeline import explain
from filterd.scan import Record, State, scan
from filterd.service.listeners import Conn, Listener

log = logging.getLogger(__name__)

VERSION = "SPAMD/1.5"
TAG_POINTS, REJECT_POINTS, MAX_POINTS = 5.0, 10.0, 50.0
NEVER_POINTS = 1000.0     # the threshold shown when the policy never flags (tag_at: null)
_VERBS = {"CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "PROCESS", "HEADERS", "PING", "SKIP"}
_MAX_HEADER_LINES = 32
_MAX_LINE = 1024

EX_DATAERR, EX_TEMPFAIL, EX_PROTOCOL = 65, 75, 76


class ProtocolError(Exception):
    """A request we refuse: `code` is the sysexits code spamd would use."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


def points(score: float, policy: verdict.Policy, manifest: verdict.Policy) -> float:
    """The spam probability as SpamAssassin-like points (see the module docstring)."""
    tag = policy.tag if policy.tag is not None else manifest.tag
    reject = policy.reject if policy.reject is not None else manifest.reject
    at, ar = _logit(tag or 0.5), _logit(reject or 0.999)
    span = ar - at if ar - at > 0.1 else 1.0    # tag == reject: one point per unit of log-odds
    value = TAG_POINTS + (REJECT_POINTS - TAG_POINTS) * (_logit(score) - at) / span
    return max(-MAX_POINTS, min(MAX_POINTS, value))


def required(policy: verdict.Policy) -> float:
    """The threshold after the slash of the Spam: line: the points at which we flag."""
    return TAG_POINTS if policy.tag is not None else NEVER_POINTS


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _shown(value: float) -> str:
    return f"{math.floor(value * 10 + 1e-9) / 10:.1f}"


async def serve(listener: Listener, conn: Conn) -> None:
    """One request per connection, as spamc and Exim send them."""
    timeout = listener.state.config.timeouts.idle
    try:
        async with asyncio.timeout(timeout):
            verb, length = await _request(conn.reader)
        if verb == "PING":
            conn.writer.write(f"{VERSION} 0 PONG\r\n".encode())
            return
        if verb == "SKIP":
            return
        if length > listener.state.config.max_message_size:
            raise ProtocolError(EX_DATAERR, f"Message too large (limit {listener.state.config.max_message_size})")
        async with asyncio.timeout(timeout):
            data = await conn.reader.readexactly(length)
    except ProtocolError as exc:
        log.warning("%s spamd %s bad request: %s", conn.id, conn.peer, exc.text)
        conn.writer.write(f"{VERSION} {exc.code} {exc.text}\r\n".encode())
        return
    except asyncio.IncompleteReadError:
        log.warning("%s spamd %s client went away before the end of the message", conn.id, conn.peer)
        return
    with listener.scanning(conn) as state:
        answer = await _answer(state, conn, verb, data)
    conn.writer.write(answer)
    await conn.writer.drain()


async def _request(reader: asyncio.StreamReader) -> tuple[str, int]:
    """(verb, Content-length) of a request; ProtocolError if it is not one."""
    line = await _line(reader)
    verb, _, proto = line.partition(" ")
    if verb not in _VERBS or not proto.startswith("SPAMC/"):
        raise ProtocolError(EX_PROTOCOL, "Bad request line")
    if verb == "PING":
        return verb, 0
    length = None
    for _ in range(_MAX_HEADER_LINES):
        header = await _line(reader)
        if not header:
            break
        name, sep, value = header.partition(":")
        if not sep:
            raise ProtocolError(EX_PROTOCOL, "Bad header line")
        if name.strip().lower() == "content-length":
            if not value.strip().isdigit():
                raise ProtocolError(EX_PROTOCOL, "Bad Content-length")
            length = int(value.strip())
        elif name.strip().lower() == "compress":
            raise ProtocolError(EX_PROTOCOL, "Compression not supported")
    else:
        raise ProtocolError(EX_PROTOCOL, "Too many header lines")
    if length is None and verb != "SKIP":
        raise ProtocolError(EX_PROTOCOL, "Missing Content-length")
    return verb, length or 0


async def _line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError(EX_PROTOCOL, "Line too long") from None
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError(EX_PROTOCOL, "Truncated request") from None
        raise
    if len(raw) > _MAX_LINE:
        raise ProtocolError(EX_PROTOCOL, "Line too long")
    return raw.decode("latin-1").rstrip("\r\n")


async def _answer(state: State, conn: Conn, verb: str, data: bytes) -> bytes:
    """The whole response to one scanned message."""
    record = Record("spamd", conn.id, conn.peer, size=len(data))
    want_reasons = verb in ("SYMBOLS", "REPORT", "REPORT_IFSPAM") or state.config.policy.report
    scanned = await scan(state, data, record, explain=want_reasons)
    judged = scanned.verdict
    if judged is None:
        reply = f"{VERSION} {EX_TEMPFAIL} Message could not be scanned, try again later\r\n"
        record.log(reply)
        return reply.encode()
    manifest = verdict.Policy(state.batcher.scorer.thresholds.tag, state.batcher.scorer.thresholds.reject)
    value = points(judged.score, state.policy, manifest) if judged.score is not None else 0.0
    spam = f"Spam: {'True' if judged.flagged else 'False'} ; {_shown(value)} / {required(state.policy):.1f}"
    body = _body(verb, state, judged, scanned.explanation, data, value)
    head = f"{VERSION} 0 EX_OK\r\n{spam}\r\n"
    if body is not None:
        head += f"Content-length: {len(body)}\r\n"
    record.log(spam)
    return head.encode() + b"\r\n" + (body or b"")


def _body(verb: str, state: State, judged: verdict.Verdict, why: explain.Explanation | None,
          data: bytes, value: float) -> bytes | None:
    if verb == "CHECK":
        return None
    if verb == "SYMBOLS":
        return ",".join(explain.symbols(why) if why else []).encode()
    if verb in ("REPORT", "REPORT_IFSPAM"):
        if verb == "REPORT_IFSPAM" and not judged.flagged:
            return b""
        return report(judged, why, value, required(state.policy)).encode("utf-8")
    config = state.config
    summary = explain.summary(why) if why and config.policy.report else None
    tagged = verdict.tag(data, judged, config.policy.subject_prefix, summary)
    if verb == "HEADERS":
        return tagged[: verdict.header_end(tagged)] + b"\r\n"
    return tagged    # PROCESS


def report(judged: verdict.Verdict, why: explain.Explanation | None, value: float,
           threshold: float = TAG_POINTS) -> str:
    """A SpamAssassin-like report: the verdict, then one line per feature (logit units)."""
    score = "-" if judged.score is None else verdict.format_score(judged.score)
    lines = [f"filterd: spam probability {score} ({_shown(value)} points, "
             f"{threshold:.1f} required), model {judged.model or 'unknown'}",
             "",
             " contribution  feature (to the model's log-odds; positive means spam)",
             " ------------  --------------------------------------------------------"]
    if why is not None:
        lines.append(f" {why.recurrent:+12.3f}  recurrent part of the network (and bias)")
        for reason in why.reasons:
            lines.append(f" {reason.contribution:+12.3f}  {reason.kind} \"{reason.text}\"")
        lines.append(f" {why.other_ngrams:+12.3f}  all other n-grams")
    return "\n".join(lines) + "\n"    # text lines as SpamAssassin's report has them
