"""The milter's header edits (filterd/frontends/milter_edits.py) as a pure function: no edit that
places a header of the message depends on an absolute index, so the headers the MTA hides
from milters cannot shift them (the end-to-end check behind Postfix is in
test_frontend_milter.py)."""

from __future__ import annotations

from kilter.protocol import messages as m

from filterd.frontends.milter_edits import edits
from filterd.verdict import Verdict

HAM = Verdict("No", 0.1, 0.6, 0.9, "v1")
SPAM = Verdict("Yes", 0.95, 0.6, 0.9, "v1")


def test_nothing_forged_only_ours_at_the_top() -> None:
    ops = edits([("Subject", b" hi"), ("Date", b" today")], HAM, None, leading_space=True)
    assert [type(op) for op in ops] == [m.InsertHeader] * 3
    assert [op.index for op in ops] == [0, 1, 2]


def test_forged_is_renamed_by_rewriting_the_rest_in_order() -> None:
    headers = [("Received", b" one"), ("Subject", b" hi"), ("X-Spam-Flag", b" YES"),
               ("Received", b" two"), ("x-spam-status", b" forged\r\n\tfolded"), ("Date", b" today")]
    ops = edits(headers, HAM, None, leading_space=False)
    assert ops[:4] == [m.ChangeHeader(1, "Date", b""), m.ChangeHeader(1, "x-spam-status", b""),
                       m.ChangeHeader(2, "Received", b""), m.ChangeHeader(1, "X-Spam-Flag", b"")]
    assert ops[4:8] == [m.AddHeader("X-Spam-Untrusted-Flag", b"YES"), m.AddHeader("Received", b"two"),
                        m.AddHeader("X-Spam-Untrusted-status", b"forged\n\tfolded"),
                        m.AddHeader("Date", b"today")]
    assert [op.index for op in ops if type(op) is m.InsertHeader] == [0, 1, 2]   # ours only
    assert len(ops) == 8 + 3


def test_subject_prefix_in_place_or_in_the_rewritten_part() -> None:
    above = edits([("Subject", b" hi"), ("X-Spam-Flag", b" NO")], SPAM, None, True, "[SPAM] ")
    assert above[0] == m.ChangeHeader(1, "Subject", b" [SPAM] hi")
    below = edits([("X-Spam-Flag", b" NO"), ("Subject", b" hi")], SPAM, None, True, "[SPAM] ")
    assert m.AddHeader("Subject", b" [SPAM] hi") in below
    assert not any(type(op) is m.ChangeHeader and op.value for op in below)   # InsertHeader is one too
    none = edits([("Date", b" today")], SPAM, None, True, "[SPAM] ")
    assert m.AddHeader("Subject", b" [SPAM]") in none
    ham = edits([("Subject", b" hi")], HAM, None, True, "[SPAM] ")
    assert all(type(op) is m.InsertHeader for op in ham)
