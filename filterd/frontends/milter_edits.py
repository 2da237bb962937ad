"""The header edits the milter answers at end of message: a pure function of what it saw.

A milter is shown the message's headers minus those the MTA adds itself: Postfix's own
`Received:` line, and with Sendmail that and possibly more. Its edits count differently:

* SMFIR_CHGHEADER (smfi_chgheader) names a header and its occurrence (1-based) among the
  headers of that name, and both MTAs count only the ones the milter was shown (Postfix's
  cleanup skips its own Received: line, Sendmail counts only the client's headers). So a
  change or deletion lands on the header we mean.
* SMFIR_INSHEADER (smfi_insheader) takes an absolute index into the MTA's whole list,
  hidden headers included; libmilter's documentation says so. An index computed from the
  headers we saw lands above the header we meant, by as many headers as the MTA hid
  there, which we cannot know.
* SMFIR_ADDHEADER appends after the last header.

So a forged `X-Spam-Flag` is renamed in place without an index: every header from the
first forged one down is deleted (by name and occurrence, the last first, since a deletion
renumbers the later headers of its name) and added back at the end in the same order,
forged ones under their new name. The headers keep their order among themselves and
below the MTA's own; only a header the MTA hid at the very end would end up above them.
Our own headers go to the top (index 0 is the top in any count, and so is the index right
below them), and a Subject that only gets policy.subject_prefix is changed where it is;
flagged mail without a Subject gets one right below ours. Which headers are forged, and how the
Subject is prefixed, are the proxy's rules (verdict.untrusted, verdict.prefixed): a message
leaves filterd the same whichever way it came in.
"""

from __future__ import annotations

from typing import Any

from kilter.protocol import messages as m

from filterd import verdict

Header = tuple[str, bytes]     # name, value as the MTA sent it, with its leading space


def edits(headers: list[Header], wanted: verdict.Edits, leading_space: bool) -> list[Any]:
    """The milter's edits that make `wanted` on a message whose headers are `headers` (values
    with a leading space); `leading_space`: the MTA takes values with it (SMFIP_HDR_LEADSPC),
    else without."""
    def wire(value: bytes) -> bytes:
        value = value.replace(b"\r\n", b"\n")    # libmilter's line ends inside a value
        return value if leading_space else value[1:] if value[:1] == b" " else value

    new = [(verdict.untrusted(name), value) for name, value in headers]
    new, add_subject = _with_prefix(new, wanted.subject_prefix)
    occurrence = _occurrences(headers)
    renamed = [i for i, ((old, _), (name, _)) in enumerate(zip(headers, new)) if old != name]
    first = renamed[0] if renamed else len(headers)
    out: list[Any] = [m.ChangeHeader(occurrence[i], name, wire(value))
                      for i, (name, value) in enumerate(new[:first]) if value != headers[i][1]]
    out += [m.ChangeHeader(occurrence[i], headers[i][0], b"") for i in reversed(range(first, len(headers)))]
    out += [m.AddHeader(name, wire(value)) for name, value in new[first:]]
    for index, (name, text) in enumerate(wanted.ours):
        # Folded lines (X-Spam-Report) end in a bare LF inside a milter header value, as
        # libmilter's smfi_insheader wants; the MTA writes its own line ends.
        out.append(m.InsertHeader(index, name, wire(b" " + text.encode("ascii"))))
    if add_subject is not None:   # right below ours, where the proxy puts it
        out.append(m.InsertHeader(len(wanted.ours), "Subject", wire(add_subject)))
    return out


def _occurrences(headers: list[Header]) -> list[int]:
    """Each header's occurrence among the headers of its name (1-based, any case)."""
    seen: dict[str, int] = {}
    out = []
    for name, _ in headers:
        seen[name.lower()] = seen.get(name.lower(), 0) + 1
        out.append(seen[name.lower()])
    return out


def _with_prefix(headers: list[Header], prefix: bytes | None) -> tuple[list[Header], bytes | None]:
    """The headers with the first Subject prefixed, or the Subject to add when there is none."""
    if not prefix:
        return headers, None
    for i, (name, value) in enumerate(headers):
        if name.lower() == "subject":
            new = verdict.prefixed(value, prefix)
            return (headers, None) if new is None else ([*headers[:i], (name, new), *headers[i + 1:]], None)
    return headers, verdict.added_subject(prefix)
