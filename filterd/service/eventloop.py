"""Which asyncio event loop runs the daemon: uvloop when installed (the `fast` extra), else asyncio's.

uvloop (libuv under the asyncio API) is a drop-in replacement: aiosmtpd and aiosmtplib run on
it unchanged, and it spends about a sixth less CPU per relayed message on the SMTP side
(docs/performance.md). `event_loop` in the config picks it: "auto" (uvloop if it can be
imported), "uvloop" (required: serve refuses to start without it) or "asyncio".
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, int], choice: str = "auto") -> int:
    """asyncio.run(main) on the loop `choice` resolves to (config.py has checked that a
    required uvloop is installed)."""
    if name(choice) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def name(choice: str) -> str:
    """"uvloop" or "asyncio": what `choice` ("auto", "uvloop", "asyncio") resolves to here."""
    if choice == "asyncio":
        return "asyncio"
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
