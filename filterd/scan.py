"""One message through the model, the same way for every front-end (SMTP proxy, milter, spamd).

`scan()` applies the rules that decide whether and how a message is scored:

* not a mail message at all (sniff.not_mail: empty, binary, no header field at the
  start): not scored (X-Spam-Status: Skipped, not a mail message (why)), never called spam;
* larger than `scoring.max_bytes`: not scored (X-Spam-Status: Skipped);
* the model fails or takes longer than `timeouts.scoring`: `scoring.on_error` decides,
  tempfail (the front-end answers 4xx and the MTA retries) or accept (X-Spam-Status: Unknown);
* otherwise the Policy judges the score; with `explain`, the reasons are computed too.

It returns an `Outcome`: the action (Action, the one vocabulary of the log, the
metrics and classify), the verdict and score, the header edits to make to a message that
is passed on, and the reasons. A front-end only renders it into its protocol.

`Record` holds the facts of one message for its one INFO line and the metrics, which name
the front-end (`frontend="smtp|milter|spamd"`), so an operator can tell the paths apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from filterd import metrics, replies
from filterd.batcher import Batcher
from filterd.config import Config
from filterd.replies import Reply
from filterd.sniff import not_mail
from filterd.verdict import Action, Edits, Policy, Verdict, format_score

if TYPE_CHECKING:
    # Imported where it is used: explain needs numpy, which a process that only scans
    # without reasons need not load.
    from filterd.pipeline import explain as explaining

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class State:
    """What a message is judged with from start to end, even if a reload swaps it meanwhile."""

    config: Config
    batcher: Batcher
    policy: Policy

    @classmethod
    def build(cls, config: Config, batcher: Batcher) -> State:
        scorer = batcher.scorer
        policy = Policy.resolve(config.policy.tag_at, config.policy.reject_at,
                                        scorer.thresholds, str(getattr(scorer, "version", "")))
        return cls(config, batcher, policy)


class Record:
    """The facts of one message for its single INFO log line and the metrics."""

    __slots__ = ("action", "client", "frontend", "id", "mail_from", "queue_id", "rcpts",
                 "relay_s", "score", "scoring_s", "size", "user")

    def __init__(self, frontend: str, id: str, client: str, mail_from: str | None = None,
                 rcpts: int = 0, size: int = 0, user: str | None = None) -> None:
        self.frontend, self.id, self.client = frontend, id, client
        self.user = user    # whose mail this is, where the front-end knows (spamd User:)
        self.mail_from, self.rcpts, self.size = mail_from, rcpts, size
        self.queue_id = ""
        self.score: float | None = None
        self.action: Action = "tempfail"
        self.scoring_s = self.relay_s = 0.0

    def log(self, reply: Any) -> None:
        """`reply`: what the client was answered (a replies.Reply, or a protocol's own line)."""
        metrics.MESSAGES.labels(self.frontend, self.action).inc()
        queue = f" queue_id={self.queue_id}" if self.queue_id else ""
        log.info(
            "%s frontend=%s%s client=%s from=<%s> rcpts=%d size=%d score=%s action=%s scoring_ms=%.1f "
            "relay_ms=%.1f reply=%r",
            self.id, self.frontend, queue, self.client, self.mail_from or "", self.rcpts,
            self.size, "-" if self.score is None else format_score(self.score),
            self.action, self.scoring_s * 1000, self.relay_s * 1000, str(reply).split("\r\n")[-1],
        )


@dataclass(frozen=True)
class Outcome:
    """What scan() decided for one message, for a front-end to render.

    `verdict` None means "answer 4xx" (scoring failed, on_error: tempfail); then there are no
    `edits`. Otherwise `edits` are the header edits for a message that is passed on (the
    proxy and spamd make them on the bytes, the milter asks the MTA to), and `refusal` says
    whether an SMTP front-end refuses it instead."""

    action: Action
    verdict: Verdict | None
    edits: Edits | None = None
    explanation: explaining.Explanation | None = None

    @property
    def score(self) -> float | None:
        return self.verdict.score if self.verdict is not None else None

    @property
    def refusal(self) -> Reply | None:
        """The SMTP reply that refuses the message (451: not scored, 550: spam), or None."""
        if self.verdict is None:
            return replies.S451_SCORING_FAILED
        return replies.S550_SPAM_REJECTED if self.action == "rejected" else None


def outcome(state: State, judged: Verdict, record: Record,
            why: explaining.Explanation | None = None,
            action: Action | None = None) -> Outcome:
    """The Outcome of a message judged `judged` (`action`, if the verdict alone does not
    say it), written into `record` (action, score)."""
    policy = state.config.policy
    report = None
    if why is not None and policy.report:
        from filterd.pipeline import explain as explaining

        report = explaining.summary(why)
    action = action or judged.action
    record.action, record.score = action, judged.score
    return Outcome(action, judged, Edits.of(judged, policy.subject_prefix, report), why)


async def scan(state: State, data: bytes, record: Record, *, explain: bool = False) -> Outcome:
    """Score `data` under `state`'s config and policy; fills in `record`."""
    config = state.config
    if (reason := not_mail(data)) is not None:
        return outcome(state, Verdict("Skipped", note=f"not a mail message ({reason})"),
                       record, action="not_mail")
    if len(data) > config.scoring.max_bytes:
        return outcome(state, Verdict("Skipped"), record)
    start = time.perf_counter()
    try:
        async with asyncio.timeout(config.timeouts.scoring):   # no task per message, unlike wait_for
            score, why = await _score(state.batcher, data, explain, record.user)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s scoring failed", record.id)
        if config.scoring.on_error != "accept":
            record.action = "tempfail"
            return Outcome("tempfail", None)
        return outcome(state, Verdict("Unknown"), record)
    record.scoring_s = time.perf_counter() - start
    metrics.SCORING_SECONDS.observe(record.scoring_s)
    metrics.SCORE.observe(score)
    return outcome(state, state.policy.judge(score), record, why)


async def _score(batcher: Batcher, data: bytes, explain: bool,
                 user: str | None = None) -> tuple[float, explaining.Explanation | None]:
    """The score through the batcher (with the user's own lessons, learning.per_user); the
    reasons, when asked, from the batch's own work (its prepared message and logit), in the
    batcher's executor: never on the loop."""
    scored = await batcher.scored(data, user, explain)
    if not explain or scored.prepared is None:
        return scored.probability, None
    from filterd.pipeline import explain as explaining

    loop = asyncio.get_running_loop()
    try:
        why = await loop.run_in_executor(batcher.executor, explaining.explain_prepared,
                                         batcher.scorer, scored.prepared, scored.logit)
    except Exception:   # the score stands; only its reasons are missing
        log.exception("explaining a score failed")
        return scored.probability, None
    return scored.probability, why
