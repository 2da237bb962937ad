"""Every SMTP reply filterd sends itself, as named constants with the code in the name.

Tests assert against these same constants. Replies the next hop sends are passed
through by relay.py; replies aiosmtpd sends on its own (syntax errors, SIZE) are
listed at the bottom so tests can name them too.

Enhanced status codes follow RFC 3463; 4xx means "keep the message and retry"
(RFC 5321 section 4.2.1), which is what keeps mail from being lost.

A reply is a `Reply(code, text)`: relay.py and handler.py decide on `code`, never on the
words, and turn a reply into the line(s) aiosmtpd sends with `str(reply)` only at the
hook's return.
"""

from __future__ import annotations

from typing import NamedTuple


class Reply(NamedTuple):
    """One SMTP reply (RFC 5321 section 4.2): a three-digit code and its text.

    `text` may hold several lines separated by "\n" (a multiline reply from the next hop).
    """

    code: int
    text: str

    @property
    def positive(self) -> bool:
        """2xx: the command succeeded (RFC 5321 section 4.2.1)."""
        return 200 <= self.code < 300

    @property
    def intermediate(self) -> bool:
        """3xx: go on (354 after DATA)."""
        return 300 <= self.code < 400

    def __str__(self) -> str:
        """The reply as aiosmtpd sends it: "250 text", or "250-a\r\n250 b" for several lines."""
        lines = _printable(self.text).split("\n")
        head = [f"{self.code}-{line}" for line in lines[:-1]]
        return "\r\n".join([*head, f"{self.code} {lines[-1]}"])

    def line(self) -> bytes:
        """The wire form with its CRLF, for the few replies we write to a transport directly."""
        return str(self).encode("ascii") + b"\r\n"


def _printable(text: str) -> str:
    """A next hop's reply may hold any byte; we pass on printable ASCII only (RFC 5321 4.2)."""
    return "".join(c if " " <= c <= "~" or c == "\n" else "?" for c in text)


# Connection level (RFC 5321 section 3.1: 554 instead of the greeting, 421 closes).
S554_ACCESS_DENIED = Reply(554, "5.7.1 Access denied")
S421_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0 Too many connections, try again later")
S421_IDLE_TIMEOUT = Reply(421, "4.4.2 Idle timeout, closing connection")
S421_SHUTTING_DOWN = Reply(421, "4.3.2 Service shutting down, try again later")

# Envelope.
S250_SENDER_OK = Reply(250, "2.1.0 Ok")
S250_RECIPIENT_OK = Reply(250, "2.1.5 Ok")
S250_RESET_OK = Reply(250, "2.0.0 Ok")
S452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3 Too many recipients")

# XFORWARD (Postfix XFORWARD_README).
S250_XFORWARD_OK = Reply(250, "2.0.0 Ok")
S550_XFORWARD_DENIED = Reply(550, "5.7.0 XFORWARD not permitted")
S501_XFORWARD_SYNTAX = Reply(501, "5.5.4 Bad XFORWARD syntax")
S503_XFORWARD_IN_TRANSACTION = Reply(503, "5.5.1 XFORWARD not allowed inside a mail transaction")

# Verdicts.
S550_SPAM_REJECTED = Reply(550, "5.7.1 Message rejected as spam")
S451_SCORING_FAILED = Reply(451, "4.3.0 Message could not be scored, try again later")
S451_INTERNAL_ERROR = Reply(451, "4.3.0 Internal error, try again later")
# The milter's bound on what it buffers (max_message_size): permanent, as Postfix's own
# message_size_limit reply is (RFC 3463 5.3.4: message too big for system).
S552_MESSAGE_TOO_BIG = Reply(552, "5.3.4 Message size exceeds fixed limit")

# Next hop trouble: the MTA keeps the message and retries.
S451_NEXT_HOP_UNREACHABLE = Reply(451, "4.4.1 Next hop unreachable, try again later")
S451_NEXT_HOP_TIMEOUT = Reply(451, "4.4.2 Next hop timed out, try again later")
S451_NEXT_HOP_LOST = Reply(451, "4.4.2 Connection to next hop lost, try again later")
S451_NEXT_HOP_INVALID = Reply(451, "4.4.0 Next hop sent an invalid reply, try again later")

# Sent by aiosmtpd itself (we configure the limit; it words the reply).
S552_SIZE_DECLARED = Reply(552, "Error: message size exceeds fixed maximum message size")
S552_TOO_MUCH_DATA = Reply(552, "Error: Too much mail data")
S500_LINE_TOO_LONG = Reply(500, "Line too long (see RFC5321 4.5.3.1.6)")
