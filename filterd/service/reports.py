"""What a serving process reports about itself, and how the reports travel.

A Daemon reports `Ready`, `Reloaded`, `Refused` (a reload that was not applied) and
`Failed` (it cannot start). Standalone, the Daemon says them itself (log, metrics,
systemd); in a worker they go to the supervisor over the channel, one JSON object per
line (`encode`/`decode`), and the supervisor says them once for all workers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Ready:
    """Listening and warmed up."""

    version: str     # the model's manifest version
    provider: str    # onnxruntime execution provider
    address: str     # "host:port" it listens on


@dataclass(frozen=True)
class Reloaded:
    """A SIGHUP applied: new transactions use this model."""

    version: str
    provider: str


@dataclass(frozen=True)
class Refused:
    """A SIGHUP not applied (bad config or model); the old one keeps serving."""

    why: str


@dataclass(frozen=True)
class Failed:
    """Cannot serve: the model would not load, the port would not bind, the worker died."""

    why: str


Report = Ready | Reloaded | Refused | Failed
_KINDS: dict[str, type[Report]] = {cls.__name__.lower(): cls
                                   for cls in (Ready, Reloaded, Refused, Failed)}


def encode(report: Report) -> bytes:
    """One channel line: {"event": "ready", "version": ..., ...}."""
    return json.dumps({"event": type(report).__name__.lower(), **asdict(report)}).encode() + b"\n"


def decode(line: bytes) -> Report:
    """The report a channel line holds; a garbled line is a Failed naming it."""
    try:
        fields = json.loads(line)
        kind = _KINDS[fields.pop("event")]
        return kind(**fields)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Failed(f"unreadable report from a worker: {line[:200]!r}")
