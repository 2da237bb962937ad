"""The verdict: score -> ham / tagged / rejected (Policy), and how it is written into a message.

Every front-end (the SMTP proxy, the milter, spamd) and `filterd classify` decide with the
same Policy, so a message gets the same action whichever way it came in, and they name
it with the same words (`Action`: the log line's action=, the metrics' action label,
classify's "action").

A message leaves filterd byte-identical to how it came in except for:

* our headers, prepended at the top (X-Spam-Flag, X-Spam-Score, X-Spam-Status);
* incoming `X-Spam-*` headers in the header section renamed to `X-Spam-Untrusted-*`,
  so that a sender cannot forge a verdict but the postmaster can still see what came in;
* optionally, a prefix inserted at the start of the Subject of flagged messages.

We work on bytes and only look at the header section (up to the first empty line,
RFC 5322 section 2.1); the body is never copied line by line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

# What happened to a message, in the log, the metrics and classify (docs/operations.md):
Action = Literal[
    "ham",            # scored below the tag threshold: passed on with our headers
    "tagged",         # at or above tag: passed on, X-Spam-Flag: YES
    "rejected",       # at or above reject: 550 (spamd, which never refuses, says Spam: True)
    "skipped",        # over scoring.max_bytes: passed on unscored, X-Spam-Status: Skipped
    "not_mail",       # not a mail message (sniff.py): passed on unscored, never spam
    "unscored",       # scoring failed, scoring.on_error: accept: X-Spam-Status: Unknown
    "tempfail",       # scoring failed (on_error: tempfail) or filterd's own error: 4xx
    "relay_failed",   # the SMTP proxy's next hop did not take it: its reply is passed back
    "too_big",        # over max_message_size: 552, nothing of it kept
]
ACTIONS: tuple[Action, ...] = get_args(Action)

# A header field that starts with X-Spam- (any case), not one we already renamed.
# Only lines at the start of a field: continuation lines begin with WSP (RFC 5322 2.2.3).
_FORGED = re.compile(rb"^(X-Spam-)(?!Untrusted-)(?=[!-9;-~]*[ \t]*:)", re.IGNORECASE | re.MULTILINE)
_SUBJECT = re.compile(rb"^Subject[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HEAD_END = re.compile(rb"\n(\r?\n)")   # group 1: the empty line
_UNSAFE = re.compile(r"[^!-~]")


@dataclass(frozen=True)
class Verdict:
    """What we say about one message; `score` is None when it was not scored."""

    status: str                  # "Yes" | "No" | "Skipped" | "Unknown"
    score: float | None = None
    tag: float | None = None
    reject: float | None = None
    model: str = ""
    note: str = ""               # why it was not scored, when that needs saying (ASCII)

    @property
    def flagged(self) -> bool:
        return self.status == "Yes"

    @property
    def rejected(self) -> bool:
        return self.score is not None and self.reject is not None and self.score >= self.reject

    @property
    def action(self) -> Action:
        """"rejected", "tagged" or "ham" for a scored message; "skipped" / "unscored" else."""
        if self.score is None:
            return "unscored" if self.status == "Unknown" else "skipped"
        return "rejected" if self.rejected else "tagged" if self.flagged else "ham"


@dataclass(frozen=True)
class Policy:
    """Thresholds resolved against the model: `tag` and `reject` are None when switched off."""

    tag: float | None
    reject: float | None
    model: str = ""

    @classmethod
    def resolve(cls, tag_at: float | str | None, reject_at: float | str | None,
                manifest: Any, model: str = "") -> Policy:
        """policy.tag_at / reject_at ("manifest", a score or None) against the model's
        calibrated thresholds (`manifest` has .tag and .reject)."""
        return cls(_resolve(tag_at, manifest.tag), _resolve(reject_at, manifest.reject), model)

    def judge(self, score: float) -> Verdict:
        flagged = self.tag is not None and score >= self.tag
        return Verdict("Yes" if flagged else "No", score, self.tag, self.reject, self.model)

    def action(self, score: float) -> Action:
        """"rejected", "tagged" or "ham": what a front-end does with a message of this score."""
        return self.judge(score).action


def policy_problem(tag_at: float | str | None, reject_at: float | str | None,
                   manifest: Any) -> str | None:
    """Why policy.tag_at / reject_at cannot run with a model of these calibrated thresholds
    (`manifest` has .tag and .reject): reject below tag once "manifest" is resolved.
    config.py refuses two numbers in that order; this needs the model."""
    policy = Policy.resolve(tag_at, reject_at, manifest)
    if policy.tag is None or policy.reject is None or policy.reject >= policy.tag:
        return None

    def shown(value: float | str | None, resolved: float) -> str:
        return f"manifest ({format_score(resolved)})" if value == "manifest" else str(value)

    return (f"policy.reject_at: {shown(reject_at, policy.reject)} is below policy.tag_at "
            f"({shown(tag_at, policy.tag)}) with this model")


def _resolve(value: float | str | None, manifest: float) -> float | None:
    if value is None:
        return None
    return manifest if value == "manifest" else float(value)


def format_score(value: float) -> str:
    """At least 3 decimals, up to 6: calibrated thresholds sit close to 1 (tag 0.998, reject
    0.99995), and a score must not print as 1.000 when it is below a threshold shown as 1.000."""
    text = f"{value:.6f}".rstrip("0")
    decimals = len(text.partition(".")[2])
    return text + "0" * max(0, 3 - decimals)


def _fmt(value: float | None) -> str:
    return "none" if value is None else format_score(value)


@dataclass(frozen=True)
class Edits:
    """The header edits for a message that is passed on, the same for every front-end:
    `ours` go to the top, in order; every incoming X-Spam-* field is renamed (`untrusted`);
    the Subject gets `subject_prefix` when it is set (flagged mail only)."""

    ours: tuple[tuple[str, str], ...]
    subject_prefix: bytes | None = None

    @classmethod
    def of(cls, verdict: Verdict, subject_prefix: str | None = None,
           report: str | None = None) -> Edits:
        """The edits for `verdict`; `report` (the reasons, policy.report) becomes X-Spam-Report."""
        prefix = subject_prefix.encode("utf-8") if subject_prefix and verdict.flagged else None
        return cls(tuple(headers(verdict, report)), prefix)


def untrusted(name: str) -> str:
    """The name an incoming header field goes on under: X-Spam-Flag -> X-Spam-Untrusted-Flag
    (any case), every other name (and one already renamed) as it is."""
    return _FORGED.sub(rb"X-Spam-Untrusted-", name.encode("ascii", "replace") + b":")[:-1].decode()


def prefixed(value: bytes, prefix: bytes) -> bytes | None:
    """A Subject's field body with `prefix` inserted after its one leading space or tab, or
    None when it already starts with it (the message passed through us twice)."""
    lead = value[:1] if value[:1] in (b" ", b"\t") else b""
    text = value[len(lead):]
    return None if text.startswith(prefix) else lead + prefix + text


def added_subject(prefix: bytes) -> bytes:
    """The Subject field body for flagged mail that had none."""
    return b" " + prefix.rstrip()


def headers(verdict: Verdict, report: str | None = None) -> list[tuple[str, str]]:
    """Our header fields, in order, as (name, value): what the proxy prepends and the milter
    inserts. `report` (the reasons, policy.report) becomes X-Spam-Report."""
    fields = [("X-Spam-Flag", "YES" if verdict.flagged else "NO")]
    if verdict.score is None:
        fields.append(("X-Spam-Status", f"{verdict.status}, {verdict.note}" if verdict.note else verdict.status))
    else:
        model = _UNSAFE.sub("_", verdict.model) or "unknown"
        score = format_score(verdict.score)
        fields.append(("X-Spam-Score", score))
        fields.append(("X-Spam-Status", f"{verdict.status}, score={score} tag={_fmt(verdict.tag)} "
                                        f"reject={_fmt(verdict.reject)} model={model}"))
    if report:
        fields.append(("X-Spam-Report", fold("X-Spam-Report", _header_text(report))))
    return fields


def _header_text(text: str) -> str:
    """Printable ASCII (RFC 5322 2.2: a field body is US-ASCII), at most 900 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:900]


def fold(name: str, value: str, width: int = 78) -> str:
    """`value` folded at spaces (CRLF + TAB, RFC 5322 2.2.3) so that lines stay within
    `width` where a word allows it; a single word longer than that keeps its own line,
    which _header_text's 900 characters keep under the 998 of RFC 5322 2.1.1."""
    lines: list[str] = []
    line = ""
    used = len(name) + 2          # "Name: "
    for word in value.split(" "):
        if line and used + len(line) + 1 + len(word) > width:
            lines.append(line)
            line, used = word, 1      # the TAB that starts a continuation line
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n\t".join(lines)


def header_end(data: bytes) -> int:
    """Offset of the empty line that ends the header section (len(data) if there is none)."""
    if data.startswith((b"\r\n", b"\n")):
        return 0
    match = _HEAD_END.search(data)
    return match.start(1) if match else len(data)


def apply(data: bytes, edits: Edits) -> bytes:
    """Return `data` with `edits` made: forged headers renamed, ours prepended; the body untouched."""
    head, start = apply_parts(data, edits)
    return head + memoryview(data)[start:]


def apply_parts(data: bytes, edits: Edits) -> tuple[bytes, int]:
    """The edited message as (head, start): it is head + data[start:], so a big message is
    sent without a copy of it (relay.Transaction.data takes the two). `head` is our headers,
    plus the header section when a forged header or the Subject had to change."""
    end = header_end(data)
    head = bytes(memoryview(data)[:end])   # bytes (data may be a bytearray): unchanged, sub returns it
    new_head = _FORGED.sub(rb"X-Spam-Untrusted-", head)
    if edits.subject_prefix:
        new_head = _prefix_subject(new_head, edits.subject_prefix)
    ours = b"".join(f"{name}: {value}\r\n".encode("ascii") for name, value in edits.ours)
    if new_head is head:
        return ours, 0                   # the header section goes out as it came
    return ours + new_head, end


def _prefix_subject(head: bytes, prefix: bytes) -> bytes:
    match = _SUBJECT.search(head)
    if match is None:
        return b"Subject:" + added_subject(prefix) + b"\r\n" + head
    value = prefixed(head[match.end():], prefix)   # the field body from just after the colon
    return head if value is None else head[: match.end()] + value
