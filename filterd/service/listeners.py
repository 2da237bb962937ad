"""Listening sockets: `bind` (host:port with one socket per worker, or unix:/path) and,
for "address in use", who holds the address (`taken`). The daemon and the supervisor bind;
the front-ends (filterd/frontends/) serve on what they are given."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from typing import Any

from filterd.hostport import split_hostport
from filterd.service import portowner


def bind(address: str, count: int = 1) -> list[socket.socket]:
    """Listening sockets for "host:port" or "unix:/path" (a stale socket file is replaced).

    For host:port, `count` sockets on the same address with SO_REUSEPORT (the first picks
    the port, so host:0 works), one for each worker: the kernel spreads new connections
    evenly over them by a hash of the addresses. With one shared socket it did not: asyncio
    accepts every queued connection at each wake-up, so the first worker to wake took a
    whole burst. A UNIX path has one socket, which the workers share.

    A UNIX socket is mode 0660, and made so from the start (umask while it is bound), so
    there is no moment at which others may connect. Connecting needs write permission on
    it, so its owner and group decide who may: the group is our process's, or, in a
    set-group-ID directory (`install -d -g postfix -m 2750 DIR`), the directory's, which
    is how the MTA gets in without filterd running in the MTA's group (docs/milter.md).
    """
    if address.startswith("unix:"):
        path = address[5:]
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o660)    # owner and group may connect, nobody else (whatever the umask was)
        sock.listen(1024)
        return [sock]
    host, port = split_hostport(address)
    family, _type, _proto, _name, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    socks: list[socket.socket] = []
    try:
        if count > 1:
            sockaddr = _claim(family, sockaddr)
        for _ in range(count):
            socks.append(socket.create_server(sockaddr, family=family, backlog=1024,
                                              reuse_port=count > 1))
            sockaddr = socks[-1].getsockname()
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise taken(exc, host, port) from None   # exc itself, or it with who holds the address
    return socks


def _remove_stale_socket(path: str) -> None:
    """A socket file left at `path` (an unclean stop) is replaced; anything else there is
    someone's file, so binding is refused with an error that says so and it stays."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket (only a stale socket is replaced)")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _claim(family: socket.AddressFamily, sockaddr: Any) -> Any:
    """Fail unless the address is free, and pick its port: SO_REUSEPORT would let our
    group join the sockets of another process (a second filterd) that set it too, and
    the kernel would then split the connections between the two. A socket bound without
    it is refused while anyone listens there. (Two instances starting in the same
    instant can still both pass this; one started later cannot.)"""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as create_server does
        probe.bind(sockaddr)
        return probe.getsockname()


def taken(exc: OSError, host: str, port: int) -> OSError:
    """`exc`, and for "address in use" the process that holds it where that can be known."""
    if exc.errno != errno.EADDRINUSE:
        return exc
    who = portowner.holder(host, port)
    said = os.strerror(exc.errno)    # asyncio's own wording repeats the address
    return OSError(exc.errno, f"{said}, by {who}" if who else f"{said} (by another process)")


