"""sd_notify(3) without libsystemd: one datagram per state change to $NOTIFY_SOCKET.

The protocol is newline-separated KEY=VALUE fields in one AF_UNIX datagram; a socket name
starting with "@" is in the abstract namespace (the "@" stands for a leading NUL byte).
Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Tells the service manager about READY / RELOADING / STOPPING; never raises."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._warned = False

    def send(self, *fields: str) -> bool:
        """Send one datagram with the given KEY=VALUE fields; False if it could not be sent."""
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            if not self._warned:  # one warning, not one per state change
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # systemd >= 253 (Type=notify-reload) wants the CLOCK_MONOTONIC time of the request.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
