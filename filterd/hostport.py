"""host:port strings, as the config writes addresses: read one, and write a socket's back."""

from __future__ import annotations

import ipaddress


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
