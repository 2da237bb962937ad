"""Logging set-up, called only by the entry point (cli.serve); every module just does getLogger(__name__).

Under systemd (JOURNAL_STREAM names our stderr) each line starts with a syslog priority
prefix like `<6>` that journald turns into the entry's priority, and carries no timestamp
(journald adds its own). Otherwise lines get a timestamp and the level name.
"""

from __future__ import annotations

import logging
import os
import sys

# syslog(3) priorities journald reads from a "<N>" line prefix (sd-daemon(3)).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """`<6>filterd.service.daemon: message`: priority prefix, no timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        lines = super().format(record).splitlines() or [""]
        # journald reads one entry per line: keep a traceback's lines at the same priority.
        return "\n".join(f"<{priority}>{line}" for line in lines)


def under_journald(stream: object = None) -> bool:
    """True when stderr is connected to journald (JOURNAL_STREAM is "dev:inode" of that stream)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())  # type: ignore[union-attr]
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup(level: str = "info", tag: str = "") -> None:
    """Configure the root logger once: one stderr handler, the level from config `log.level`.

    `tag` (e.g. "worker 2") is put in front of every line so workers can be told apart.
    """
    prefix = f"{tag}: " if tag else ""
    handler = logging.StreamHandler(sys.stderr)
    if under_journald():
        handler.setFormatter(JournalFormatter(f"{prefix}%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """Change the level (on reload); our own loggers only, libraries stay at WARNING."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("filterd").setLevel(level.upper())
