"""Every SMTP reply filterd sends itself, as named constants with the code in the name.

Tests assert against these same constants. Replies the next hop sends are passed
through by relay.py; replies aiosmtpd sends on its own (syntax errors, SIZE) are
listed at the bottom so tests can name them too.

Enhanced status codes follow RFC 3463; 4xx means "keep the message and retry"
(RFC 5321 section 4.2.1), which is what keeps mail from being lost.
"""

# Connection level (RFC 5321 section 3.1: 554 instead of the greeting, 421 closes).
S554_ACCESS_DENIED = "554 5.7.1 Access denied"
S421_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
S421_IDLE_TIMEOUT = "421 4.4.2 Idle timeout, closing connection"
S421_SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"

# Envelope.
S250_SENDER_OK = "250 2.1.0 Ok"
S250_RECIPIENT_OK = "250 2.1.5 Ok"
S250_RESET_OK = "250 2.0.0 Ok"
S452_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"

# XFORWARD (Postfix XFORWARD_README).
S250_XFORWARD_OK = "250 2.0.0 Ok"
S550_XFORWARD_DENIED = "550 5.7.0 XFORWARD not permitted"
S501_XFORWARD_SYNTAX = "501 5.5.4 Bad XFORWARD syntax"
S503_XFORWARD_IN_TRANSACTION = "503 5.5.1 XFORWARD not allowed inside a mail transaction"

# Verdicts.
S550_SPAM_REJECTED = "550 5.7.1 Message rejected as spam"
S451_SCORING_FAILED = "451 4.3.0 Message could not be scored, try again later"
S451_INTERNAL_ERROR = "451 4.3.0 Internal error, try again later"

# Next hop trouble: the MTA keeps the message and retries.
S451_NEXT_HOP_UNREACHABLE = "451 4.4.1 Next hop unreachable, try again later"
S451_NEXT_HOP_TIMEOUT = "451 4.4.2 Next hop timed out, try again later"
S451_NEXT_HOP_LOST = "451 4.4.2 Connection to next hop lost, try again later"
S451_NEXT_HOP_INVALID = "451 4.4.0 Next hop sent an invalid reply, try again later"

# Sent by aiosmtpd itself (we configure the limit; it words the reply).
S552_SIZE_DECLARED = "552 Error: message size exceeds fixed maximum message size"
S552_TOO_MUCH_DATA = "552 Error: Too much mail data"
S500_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
