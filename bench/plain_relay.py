"""The baselines for bench/e2e.py: an SMTP relay that does everything filterd does except scoring.

aiosmtpd in, aiosmtplib out; the reply to the final dot is the next hop's own, so a message
is acknowledged only after the next hop took it. Two shapes are measured (issue 12):

* `plain` (the CPU reference): one process, a new next-hop connection per message
  (`--pool-size 0`), the standard asyncio loop;
* `tuned` (the throughput reference): next-hop connections pooled and reused across
  messages (as filterd's relay: one per message in flight, `--pool-size` kept idle),
  several worker processes on SO_REUSEPORT (`--workers 2`), and uvloop (`--uvloop`).

    python bench/plain_relay.py --listen 127.0.0.1:0 --next-hop 127.0.0.1:10026 \
        [--workers 2] [--pool-size 8] [--uvloop]

Prints `LISTENING <host>:<port>` on stdout once every worker is serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

MAX_SIZE = 52428800  # filterd's default max_message_size


class Pool:
    """Connected aiosmtplib clients, one per message in flight; up to `size` kept when idle.

    This is filterd's relay policy (filterd/frontends/smtp/relay.py): no cap on connections in use, LIFO
    reuse, idle connections beyond `size` closed.
    """

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.idle: list[aiosmtplib.SMTP] = []

    async def _take(self) -> aiosmtplib.SMTP:
        while self.idle:
            client = self.idle.pop()
            if client.is_connected:
                return client
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=60, start_tls=False,
                                 local_hostname="plain-relay")
        await client.connect()
        await client.ehlo()
        return client

    async def send(self, sender: str, rcpts: list[str], data: bytes,
                   mail_options: list[str]) -> str:
        client: aiosmtplib.SMTP | None = None
        try:
            client = await self._take()
            errors, reply = await client.sendmail(sender, rcpts, data, mail_options=mail_options)
        except aiosmtplib.SMTPResponseException as exc:
            # The bench never gets here; drop the connection to keep the error path simple.
            if client is not None:
                client.close()
            return f"{exc.code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError):
            if client is not None:
                client.close()
            return "451 4.4.1 next hop unavailable"
        if len(self.idle) < self.size:
            self.idle.append(client)
        else:
            await _quit(client)
        return f"250 {reply}" if errors == {} else "250 accepted for some recipients"


async def _quit(client: aiosmtplib.SMTP) -> None:
    """End a next-hop connection politely: a relay without a pool pays for QUIT every time."""
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


class RelayHandler:
    """aiosmtpd handler: relay every message as is, answer with the next hop's reply."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        options = [o for o in envelope.mail_options if o.upper().startswith("BODY=")]
        return await self.pool.send(envelope.mail_from or "", list(envelope.rcpt_tos), data,
                                    options)


async def serve(sock: socket.socket, next_hop: tuple[str, int], pool_size: int) -> None:
    loop = asyncio.get_running_loop()
    handler = RelayHandler(Pool(next_hop[0], next_hop[1], pool_size))
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=MAX_SIZE, enable_SMTPUTF8=True,
                     hostname="plain-relay"),
        sock=sock,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--next-hop", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pool-size", type=int, default=8,
                        help="idle next-hop connections kept; 0 = a new connection per message")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's loop")
    args = parser.parse_args()
    run = asyncio.run
    if args.uvloop:
        import uvloop

        run = uvloop.run
    host, port = split(args.listen)
    # The first socket fixes the port (0 = ephemeral); each worker binds its own with
    # SO_REUSEPORT so the kernel spreads connections between them, as filterd does.
    first = bind(host, port)
    port = first.getsockname()[1]
    socks = [first] + [bind(host, port) for _ in range(args.workers - 1)]
    for s in socks:
        s.listen(1024)
    children = []
    for sock in socks[1:]:
        pid = os.fork()
        if pid == 0:
            run(serve(sock, split(args.next_hop), args.pool_size))
            os._exit(0)
        children.append(pid)
    print(f"LISTENING {host}:{port}", flush=True)
    try:
        run(serve(first, split(args.next_hop), args.pool_size))
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
