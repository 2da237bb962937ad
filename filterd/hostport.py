"""Addresses: host:port strings as the config writes them (read one, write a socket's back),
a peer's IP address against the configured networks (allowed_networks and the like), and
the name we greet with."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from filterd.config import Config

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def split_hostport(value: str) -> tuple[str, int]:
    """'127.0.0.1:25' / '[::1]:25' / 'localhost:25' -> (host, port); ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} is not host:port (IPv6 as [::1]:port, port 0-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError when it is not one
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:10025")
    return host, int(port)


def format_address(sockname: tuple) -> str:
    """A socket address as "host:port" or "[v6]:port", the form split_hostport reads."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe(sock: socket.socket) -> str:
    """A listening socket's address as the log and the config write it: host:port or unix:/path."""
    name = sock.getsockname()
    return f"unix:{name}" if sock.family == socket.AF_UNIX else format_address(name)


def greeting_name(config: Config) -> str:
    """Our name in the SMTP greeting and EHLO; Postfix refuses a filter that greets with its
    own name. socket.getfqdn may ask DNS: call it off the event loop."""
    return config.hostname or f"filterd.{socket.getfqdn()}"


def networks(values: Iterable[Any] | None) -> list[Network]:
    """The networks of a config list ("127.0.0.0/8", "::1/128"), host bits allowed."""
    return [ipaddress.ip_network(str(v), strict=False) for v in values or ()]


def peer_address(peer: Any) -> Address | None:
    """A socket peer's IP address (an IPv4-mapped one as IPv4, a scope id dropped); None for
    a UNIX socket or anything else that is not an IP peer."""
    try:
        addr = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except (TypeError, ValueError, IndexError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def in_networks(addr: Address | None, nets: list[Network]) -> bool:
    return addr is not None and any(addr in net for net in nets)
