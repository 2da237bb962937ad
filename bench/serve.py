"""`filterd serve` for the benches, with a workaround for a supervisor bug (bench only).

    python -m bench.serve -c CONFIG      (same as `python -m filterd serve -c CONFIG`)

filterd/supervisor.py `_spawn` drops the StreamWriter of each worker's channel
(`reader, _writer = await asyncio.open_connection(sock=ours)`); on Python 3.11 the writer's
`__del__` closes the transport, every worker reads EOF, logs "supervisor gone" and stops, so
`workers: 2` never becomes ready. Until supervisor.py keeps the writer (the fix: store it in
`Worker`), this wrapper keeps every writer alive. With `workers: 1` it changes nothing.
"""

from __future__ import annotations

import asyncio
import sys

from filterd import cli

_open_connection = asyncio.open_connection
_keep: list[asyncio.StreamWriter] = []


async def _keeping(*args, **kwargs):  # type: ignore[no-untyped-def]
    reader, writer = await _open_connection(*args, **kwargs)
    _keep.append(writer)
    return reader, writer


if __name__ == "__main__":
    asyncio.open_connection = _keeping  # type: ignore[assignment]
    sys.exit(cli.main(["serve", *sys.argv[1:]]))
