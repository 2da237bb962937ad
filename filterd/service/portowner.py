"""Who listens on a TCP address we could not bind: best effort, Linux only, for one log line.

The kernel lists every TCP socket in /proc/net/tcp and /proc/net/tcp6 (address, port, state
and the socket's inode); a process that holds one has a `socket:[INODE]` link among its
/proc/PID/fd. Reading another user's fds needs privilege, so the answer may be None: the
caller then says only that the address is taken.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

LISTEN = "0A"            # TCP_LISTEN in /proc/net/tcp's "st" column
_PROC = Path("/proc")


def _address(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _listening_inodes(host: str, port: int) -> set[str]:
    """Inodes of the sockets listening on `port` at `host` or at a wildcard address."""
    try:
        wanted = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        wanted = None
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_hex, port_hex = fields[1].split(":")
            if fields[3] != LISTEN or int(port_hex, 16) != port:
                continue
            local = _address(local_hex)
            if wanted is None or local.is_unspecified or wanted.is_unspecified or local == wanted:
                inodes.add(fields[9])
    return inodes


def _command(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    words = raw.replace(b"\0", b" ").decode("utf-8", "replace").split()   # one line, whatever the args hold
    return " ".join(words)[:120] or "?"


def holder(host: str, port: int) -> str | None:
    """"pid 123 (python -m filterd serve -c x.yaml)" for the lowest pid holding a socket
    that listens on host:port (with workers, the supervisor), or None if it cannot be known."""
    links = {f"socket:[{inode}]" for inode in _listening_inodes(host, port)}
    if not links:
        return None
    for pid in sorted(int(p) for p in os.listdir(_PROC) if p.isdigit()):
        try:
            fds = os.listdir(_PROC / str(pid) / "fd")
        except OSError:        # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(_PROC / str(pid) / "fd" / fd) in links:
                    return f"pid {pid} ({_command(pid)})"
            except OSError:
                continue
    return None
