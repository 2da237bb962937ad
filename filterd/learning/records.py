"""Journal records: one line per learn or forget, JSON with a CRC-32, never pickle.

    {"coef":-1.93,"key":"<sha256>","label":"ham","model":"20261202-060931-s1","op":"learn","user":null} 1a2b3c4d

`coef` is the lesson's step (learning/online.py), `model` the model version it was computed
with: a lesson moves the weights of that model only, so once `export retrain` installs a
new one (which has learned the taught messages) the delta starts from zero. A forget
names the key (and user) only. A line that does not end in a newline was being written
when the process died: it was never acknowledged and is dropped. Any other line that does
not parse, or fails its CRC, makes the whole journal refused (CorruptState).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass

from filterd.learning import Label


class CorruptState(Exception):
    """The store holds something we did not write: refuse it, keep scanning."""


class Unavailable(OSError):
    """The store cannot be reached now (Redis down): a process keeps what it holds."""


@dataclass(frozen=True)
class Record:
    op: str                    # "learn" or "forget"
    key: str                   # online.message_key of the message
    user: str | None = None    # None: site-wide
    label: Label | None = None
    coef: float = 0.0
    model: str = ""

    def encode(self) -> bytes:
        body = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()
        return body + b" %08x\n" % zlib.crc32(body)


def decode(line: bytes) -> Record:
    """One complete line (with its newline) -> Record; CorruptState if it is not one of ours."""
    body, _, crc = line.rstrip(b"\n").rpartition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            raise CorruptState("a journal line fails its CRC")
        data = json.loads(body)
        record = Record(**data)
    except (ValueError, TypeError) as exc:
        raise CorruptState(f"a journal line does not parse: {exc}") from None
    if record.op not in ("learn", "forget") or len(record.key) != 64 or \
            record.label not in (None, "spam", "ham"):
        raise CorruptState(f"a journal line holds an unknown record: {record!r}")
    return record


def split_lines(data: bytes) -> tuple[list[Record], int]:
    """The records of the complete lines in `data`, and how many bytes they took."""
    end = data.rfind(b"\n") + 1
    return [decode(line) for line in data[:end].splitlines(keepends=True)], end
