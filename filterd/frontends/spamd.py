"""The spamd front-end: SpamAssassin's spamd protocol, as spamc, Exim's `spam =`, Haraka's
spamassassin plugin and aiospamc speak it.

The wire format (reading requests, framing answers per SPAMC/1.x version, spamd's error
codes and texts) is spamd_protocol.py; this module answers a request. One request per
connection. CHECK, SYMBOLS, REPORT, REPORT_IFSPAM, PROCESS and HEADERS scan the message;
PING answers PONG; SKIP answers nothing; TELL teaches the learning engine when
`spamd.allow_tell` is on (tell() below). `User:` names whose mail it is: a TELL's lesson
is that user's and a scan gets that user's lessons when `learning.per_user` is on
(docs/learning.md); there are no other per-user settings (spamd would switch to the user's
preferences). A scan that fails answers `75` (EX_TEMPFAIL, which spamd never sends):
spamc without `-x` then passes the message through unchanged, Exim defers.

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
import contextlib
import logging
import math

from filterd import verdict
from filterd.config import Config
from filterd.frontends.listener import Conn, Listener
from filterd.frontends.spamd_protocol import (
    EX_TEMPFAIL,
    EX_TIMEOUT,
    PONG,
    Body,
    Request,
    SpamdError,
    answer,
    bad_header,
    read_body,
    read_request,
    spam_line,
    told,
    unavailable,
)
from filterd.learning import LearningError
from filterd.pipeline import explain
from filterd.scan import Outcome, Record, State, scan

log = logging.getLogger(__name__)

TAG_POINTS, REJECT_POINTS, MAX_POINTS = 5.0, 10.0, 50.0
NEVER_POINTS = 1000.0     # the threshold shown when the policy never flags (tag_at: null)
_LINGER = 1.0             # seconds a refused client may go on sending before we close
TELL_OFF = "TELL commands are not enabled, set the --allow-tell switch."   # spamd's words


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
    """One request per connection, as spamd serves them."""
    config = listener.state.config
    timeout = config.timeouts.idle
    try:
        async with asyncio.timeout(timeout):   # the whole request, headers and body
            request = await read_request(conn.reader)
            if request.verb == "TELL":
                _may_tell(listener, request)
            body = Body(b"", 0)
            if request.verb not in ("PING", "SKIP"):
                body = await read_body(conn.reader, request, config.max_message_size,
                                       _keep(request, config))
    except SpamdError as exc:
        await _refuse(conn, exc)
        return
    except TimeoutError:
        await _refuse(conn, SpamdError(EX_TIMEOUT, f"Timeout: ({timeout:g} second socket timeout "
                                                   "reading input from client)"))
        return
    if request.verb == "PING":
        conn.writer.write(PONG)
    elif request.verb == "TELL":
        conn.writer.write(await tell(listener, conn, request, body.data))
    elif request.verb != "SKIP":
        with listener.scanning(conn) as state:
            conn.writer.write(await _answer(state, conn, request, body))
    await conn.writer.drain()


def _keep(request: Request, config: Config) -> int | None:
    """How much of the message a request needs held: all of it to answer it back (PROCESS,
    HEADERS) or to learn from (TELL); for a scan alone (CHECK, SYMBOLS, REPORT*), one byte
    over scoring.max_bytes, which is enough to know it is not scored."""
    if request.verb in ("PROCESS", "HEADERS", "TELL"):
        return None
    return config.scoring.max_bytes + 1


async def _refuse(conn: Conn, exc: SpamdError) -> None:
    """Answer the error line, then read (and drop) what the client still sends, for a
    second at most: closing with unread input makes the kernel reset the connection, and a
    reset can destroy the answer before the client reads it (e.g. a body over the limit)."""
    # A client that connects and goes away (a port probe) is not worth a warning.
    level = logging.DEBUG if exc.text.endswith("(closed before headers)") else logging.WARNING
    log.log(level, "%s spamd %s refused: %s", conn.id, conn.peer, exc.text)
    conn.writer.write(exc.line())
    await conn.writer.drain()
    if conn.writer.can_write_eof():
        conn.writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(_LINGER):
            while await conn.reader.read(65536):
                pass


def _may_tell(listener: Listener, request: Request) -> None:
    """spamd's checks before it reads a TELL's body, in its order, and ours after them."""
    section = listener.state.config.spamd
    if section is None or not section.allow_tell:
        raise unavailable(TELL_OFF)
    if request.set_local and request.remove_local:
        raise bad_header("Unable to set local and remove local in the same operation.")
    if request.set_local and request.message_class is None:
        raise bad_header("(Set: local needs a Message-class header)")
    if listener.teacher is None:
        raise unavailable("learning is off in this filterd (learning: null)")


async def tell(listener: Listener, conn: Conn, request: Request, data: bytes) -> bytes:
    """Teach (`Set: local`) or unteach (`Remove: local`) one message. The answer names
    what changed; nothing when it was already so, and spamc says "already un/learned"."""
    teacher = listener.teacher
    assert teacher is not None   # _may_tell checked it before the body was read
    did_set = did_remove = False
    try:
        if request.set_local and request.message_class is not None:
            did_set = await teacher.learn(data, request.message_class, request.user)
        elif request.remove_local:
            did_remove = await teacher.forget(data, request.user)
    except LearningError as exc:
        log.warning("%s spamd %s TELL not recorded: %s", conn.id, conn.peer, exc)
        return SpamdError(EX_TEMPFAIL, "Service temporarily unavailable: the lesson could not "
                                       "be recorded, try again later").line()
    what = (f"set {request.message_class}" if request.set_local else
            "remove" if request.remove_local else "nothing asked")
    log.info("%s frontend=spamd client=%s user=%s size=%d tell=%r changed=%s", conn.id,
             conn.peer, request.user or "-", len(data), what, did_set or did_remove)
    return told(did_set, did_remove)


async def _answer(state: State, conn: Conn, request: Request, body: Body) -> bytes:
    """The whole response to one scanned message."""
    verb, data = request.verb, body.data
    record = Record("spamd", conn.id, conn.peer, size=body.size, user=request.user)
    want_reasons = verb in ("SYMBOLS", "REPORT", "REPORT_IFSPAM") or state.config.policy.report
    outcome = await scan(state, data, record, explain=want_reasons)
    judged = outcome.verdict
    if judged is None or outcome.edits is None:
        error = SpamdError(EX_TEMPFAIL, "Message could not be scanned, try again later")
        record.log(error.text)
        return error.line()
    manifest = verdict.Policy(state.batcher.scorer.thresholds.tag, state.batcher.scorer.thresholds.reject)
    value = points(judged.score, state.policy, manifest) if judged.score is not None else 0.0
    spam = spam_line(request, judged.flagged, _shown(value), f"{required(state.policy):.1f}")
    reply = _body(request, state, outcome, data, value)
    record.log(spam)
    return answer(request, spam, reply)


def _body(request: Request, state: State, outcome: Outcome, data: bytes, value: float) -> bytes | None:
    verb, why = request.verb, outcome.explanation
    assert outcome.verdict is not None and outcome.edits is not None   # _answer said tempfail
    if verb == "CHECK":
        return None
    if verb == "SYMBOLS":
        names = ",".join(explain.symbols(why) if why else []).encode()
        return names if request.at_least(1, 3) else names + b"\r\n"   # as spamd does
    if verb in ("REPORT", "REPORT_IFSPAM"):
        if verb == "REPORT_IFSPAM" and not outcome.verdict.flagged:
            return b""
        return report(outcome.verdict, why, value, required(state.policy)).encode("utf-8")
    # An mbox "From " line stays first, our headers after it, as SpamAssassin keeps it.
    mbox = data[: data.index(b"\n") + 1] if data.startswith(b"From ") and b"\n" in data else b""
    tagged = mbox + verdict.apply(data[len(mbox):], outcome.edits)
    if verb == "HEADERS":
        return tagged[: len(mbox) + verdict.header_end(tagged[len(mbox):])] + b"\r\n"
    return tagged    # PROCESS


def report(judged: verdict.Verdict, why: explain.Explanation | None, value: float,
           threshold: float = TAG_POINTS) -> str:
    """A SpamAssassin-like report: the verdict, then one line per feature (logit units)."""
    score = "-" if judged.score is None else verdict.format_score(judged.score)
    # No empty line: Exim folds $spam_report into a header, where it would be a blank line.
    lines = [f"filterd: spam probability {score} ({_shown(value)} points, "
             f"{threshold:.1f} required), model {judged.model or 'unknown'}",
             " contribution  feature (to the model's log-odds; positive means spam)",
             " ------------  --------------------------------------------------------"]
    if why is not None:
        lines.append(f" {why.recurrent:+12.3f}  recurrent part of the network (and bias)")
        for reason in why.reasons:
            lines.append(f" {reason.contribution:+12.3f}  {reason.kind} \"{reason.text}\"")
        lines.append(f" {why.other_ngrams:+12.3f}  all other n-grams")
    return "\n".join(lines) + "\n"    # text lines as SpamAssassin's report has them
