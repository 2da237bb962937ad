"""The milter's header edits (filterd/frontends/milter_edits.py) as a pure function: no edit that
places a header of the message depends on an absolute index, so the headers the MTA hides
from milters cannot shift them (the end-to-end check behind Postfix is in
test_frontend_milter.py). And one set of header rules for every front-end: the edits, made
as an MTA makes them (docs/milter.md: ChangeHeader names an occurrence among the headers of
that name and an empty value deletes, AddHeader appends, InsertHeader(i) counts from the
top), leave the header section the proxy and spamd send (verdict.apply)."""

from __future__ import annotations

from typing import Any

import pytest
from kilter.protocol import messages as m

from filterd.frontends.milter_edits import edits
from filterd.verdict import Edits, Verdict, apply, header_end

HAM = Verdict("No", 0.1, 0.6, 0.9, "v1")
SPAM = Verdict("Yes", 0.95, 0.6, 0.9, "v1")


def test_nothing_forged_only_ours_at_the_top() -> None:
    ops = edits([("Subject", b" hi"), ("Date", b" today")], Edits.of(HAM), leading_space=True)
    assert [type(op) for op in ops] == [m.InsertHeader] * 3
    assert [op.index for op in ops] == [0, 1, 2]


def test_forged_is_renamed_by_rewriting_the_rest_in_order() -> None:
    headers = [("Received", b" one"), ("Subject", b" hi"), ("X-Spam-Flag", b" YES"),
               ("Received", b" two"), ("x-spam-status", b" forged\r\n\tfolded"), ("Date", b" today")]
    ops = edits(headers, Edits.of(HAM), leading_space=False)
    assert ops[:4] == [m.ChangeHeader(1, "Date", b""), m.ChangeHeader(1, "x-spam-status", b""),
                       m.ChangeHeader(2, "Received", b""), m.ChangeHeader(1, "X-Spam-Flag", b"")]
    assert ops[4:8] == [m.AddHeader("X-Spam-Untrusted-Flag", b"YES"), m.AddHeader("Received", b"two"),
                        m.AddHeader("X-Spam-Untrusted-status", b"forged\n\tfolded"),
                        m.AddHeader("Date", b"today")]
    assert [op.index for op in ops if type(op) is m.InsertHeader] == [0, 1, 2]   # ours only
    assert len(ops) == 8 + 3


def test_subject_prefix_in_place_or_in_the_rewritten_part() -> None:
    prefixed = Edits.of(SPAM, "[SPAM] ")
    above = edits([("Subject", b" hi"), ("X-Spam-Flag", b" NO")], prefixed, True)
    assert above[0] == m.ChangeHeader(1, "Subject", b" [SPAM] hi")
    below = edits([("X-Spam-Flag", b" NO"), ("Subject", b" hi")], prefixed, True)
    assert m.AddHeader("Subject", b" [SPAM] hi") in below
    assert not any(type(op) is m.ChangeHeader and op.value for op in below)   # InsertHeader is one too
    none = edits([("Date", b" today")], prefixed, True)
    assert none[-1] == m.InsertHeader(3, "Subject", b" [SPAM]")   # right below ours, as the proxy
    ham = edits([("Subject", b" hi")], Edits.of(HAM, "[SPAM] "), True)
    assert all(type(op) is m.InsertHeader for op in ham)




def by_mta(headers: list[tuple[str, bytes]], answers: list[Any]) -> list[tuple[str, bytes]]:
    out = list(headers)
    for edit in answers:
        match edit:   # InsertHeader first: kilter derives it from ChangeHeader
            case m.InsertHeader(index=index, name=name, value=value):
                out.insert(index, (name, value))
            case m.ChangeHeader(index=index, name=name, value=value):
                at = [i for i, (n, _) in enumerate(out) if n.lower() == name.lower()][index - 1]
                if value:
                    out[at] = (out[at][0], value)
                else:
                    del out[at]
            case m.AddHeader(name=name, value=value):
                out.append((name, value))
    return out


def section(headers: list[tuple[str, bytes]]) -> bytes:
    return b"".join(name.encode() + b":" + value.replace(b"\n", b"\r\n") + b"\r\n"
                    for name, value in headers)


def parse(head: bytes) -> list[tuple[str, bytes]]:
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif line:
            name, _, value = line.partition(b":")
            fields.append((name.decode(), value))
    return fields


CASES = [
    [("From", b" a@example.org"), ("Subject", b" offer")],
    [("X-Spam-Flag", b" YES"), ("x-spam-score", b" 0.0"), ("Subject", b" [SPAM] offer")],
    [("Received", b" from x\n\tby y"), ("X-SPAM-Level", b" ***"), ("X-Spam-Untrusted-Flag", b" kept"),
     ("X-Spammer", b" not ours"), ("From", b" a")],
    [("From", b" a")],                        # no Subject: one is added to flagged mail
    [("Subject", b"\tTabbed"), ("X-Spam-Status", b" Yes"), ("Subject", b" second")],
]


@pytest.mark.parametrize("headers", CASES)
@pytest.mark.parametrize("judged", [SPAM, HAM])
@pytest.mark.parametrize("report", [None, "word \"offer\" +1.2"])
def test_milter_edits_leave_what_the_proxy_sends(headers: list[tuple[str, bytes]], judged: Verdict,
                                                 report: str | None) -> None:
    wanted = Edits.of(judged, "[SPAM] ", report)
    message = section(headers) + b"\r\nbody\r\n"
    proxied = apply(message, wanted)
    milter = by_mta(headers, edits(headers, wanted, leading_space=True))
    assert parse(proxied[:header_end(proxied)]) == parse(section(milter))
