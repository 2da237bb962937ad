"""Is it mail at all? Files and streams that are not mail get an answer, not a score.

The model scores whatever bytes it is given, and a file that is not mail (an empty file,
a program, JSON, a numpy array, a Maildir's `dovecot-uidlist`) gets a confident and
meaningless score. A mail message starts with its header section (RFC 5322 2.1): a
header field is a name of printable ASCII without colon, then a colon (2.2; obsolete
syntax allows white space before it, 4.5). We ask that the first line be one, after an
mbox `From ` envelope line if there is one, and that the name start with a letter or
digit (real field names do; JSON's `{"key":` does not). Nothing else is asked: a message
with odd bytes further down is still mail and is scored.
"""

from __future__ import annotations

import re

_FIELD = re.compile(rb"[A-Za-z0-9][!-9;-~]*[ \t]*:")
_SNIFF = 4096        # how much of the head tells text from binary


def not_mail(raw: bytes | bytearray | memoryview) -> str | None:
    """Why `raw` is not a mail message ("empty", "binary data", "no header fields at the
    start"), or None when it is one."""
    head = bytes(raw[:_SNIFF])
    if not head.strip():
        return "empty"
    if head.startswith(b"From "):            # an mbox envelope line comes before the headers
        head = head.partition(b"\n")[2]
    if _FIELD.match(head):
        return None
    return "binary data" if b"\0" in head else "no header fields at the start"
