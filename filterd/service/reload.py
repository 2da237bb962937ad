"""SIGHUP: which keys a reload may change, and how its outcome is said.

Keys read once when a part is built (the listening socket, the relay pool, the metrics
endpoint) keep their old values on reload; `pin_restart_keys` says which changed and
would need a restart. The outcome is said once per process systemd hears from: the
standalone Daemon, or the supervisor for all its workers (each passes its own logger).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from filterd.config import Config
from filterd import metrics
from filterd.service.notify import Notifier

log = logging.getLogger(__name__)

RESTART_KEYS = ("listen", "workers", "event_loop", "metrics", "next_hop", "relay", "milter", "spamd", "learning",
                "timeouts.next_hop_connect", "timeouts.next_hop")


def _get(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _set(config: Any, key: str, value: Any) -> Any:
    """`config` with the dotted `key` set to `value` (frozen dataclasses: copied along the path)."""
    head, _, rest = key.partition(".")
    if rest:
        value = _set(getattr(config, head), rest, value)
    return dataclasses.replace(config, **{head: value})


def pin_restart_keys(old: Config, new: Config) -> tuple[Config, list[str]]:
    """`new` with the old values of keys a reload cannot apply, and a note per changed key."""
    notes = [f"{key} changed ({_get(old, key)!r} -> {_get(new, key)!r}): restart filterd to apply it"
             for key in RESTART_KEYS if _get(old, key) != _get(new, key)]
    pinned = new
    for key in RESTART_KEYS:
        pinned = _set(pinned, key, _get(old, key))
    return pinned, notes


def reloaded(notifier: Notifier, version: str, provider: str, logger: logging.Logger = log) -> None:
    metrics.MODEL.info({"version": version, "provider": provider})
    metrics.RELOADS.labels("ok").inc()
    logger.info("reloaded: model %s on %s", version, provider)
    notifier.ready(f"reloaded, model {version}")


def refused(notifier: Notifier, why: str, logger: logging.Logger = log) -> None:
    metrics.RELOADS.labels("failed").inc()
    logger.error("reload refused, still serving the previous config and model: %s", why)
    notifier.ready("reload refused, see the log")
