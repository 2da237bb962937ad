"""What the bench scripts share: ports, child processes, corpus samples, results files.

Nothing here is part of filterd; the bench scripts import it as `bench.harness` and run from
the repository root (`python -m bench.e2e`, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PYTHON = sys.executable


def corpus_path() -> Path:
    """The one corpus setting (see tests/conftest.py): FILTERD_CORPUS, default ../shared/corpus."""
    return Path(os.environ.get("FILTERD_CORPUS", REPO.parent / "shared" / "corpus")).resolve()


def free_port() -> int:
    """An ephemeral port, for programs (smtp-sink, filterd) that cannot report the one they got."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_banner(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until an SMTP server on 127.0.0.1:port sends its 220 greeting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered on port {port} within {timeout} s")


@contextlib.contextmanager
def child(args: list[str], port: int | None = None, log: Path | None = None,
          **popen: object) -> Iterator[subprocess.Popen]:
    """Run a server as a child process in its own process group; always stop it (SIGTERM, then KILL)."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **popen)  # type: ignore[call-overload]
        yield from _supervise(proc, port)


def _supervise(proc: subprocess.Popen, port: int | None) -> Iterator[subprocess.Popen]:
    try:
        if port is not None:
            wait_banner(port, proc=proc)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def smtp_sink() -> Iterator[int]:
    """Postfix's smtp-sink on an ephemeral port; yields the port."""
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    with child(["smtp-sink", *user, "-m", "1024", f"127.0.0.1:{port}", "1024"], port):
        yield port


@contextlib.contextmanager
def plain_relay(next_hop: int, workers: int = 1, pool_size: int = 8,
                uvloop: bool = False) -> Iterator[tuple[int, subprocess.Popen]]:
    """bench/plain_relay.py in front of next_hop; yields (port, process)."""
    port = free_port()
    args = [PYTHON, str(REPO / "bench" / "plain_relay.py"), "--listen", f"127.0.0.1:{port}",
            "--next-hop", f"127.0.0.1:{next_hop}", "--workers", str(workers),
            "--pool-size", str(pool_size)] + (["--uvloop"] if uvloop else [])
    with child(args, port) as proc:
        yield port, proc


def filterd_config(listen: int, next_hop: int, **overrides: object) -> Path:
    """The shipped config.yaml with only the addresses changed (and any overrides, dotted keys)."""
    import yaml

    shipped = REPO / "config.yaml"
    config = (yaml.safe_load(shipped.read_text()) if shipped.exists() else None) or {}
    config.update(listen=f"127.0.0.1:{listen}", next_hop=f"127.0.0.1:{next_hop}", metrics=None)
    config.setdefault("model", {})["path"] = str(REPO / "model_artifacts")
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    fd, name = tempfile.mkstemp(prefix="filterd-bench-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f)
    return Path(name)


@contextlib.contextmanager
def filterd(next_hop: int, log: Path | None = None, **overrides: object) -> Iterator[tuple[int, subprocess.Popen]]:
    """`filterd serve` with the shipped config in front of next_hop; yields (port, process)."""
    port = free_port()
    config = filterd_config(port, next_hop, **overrides)
    try:
        with child([PYTHON, "-m", "filterd", "serve", "-c", str(config)], port, log,
                   cwd=REPO) as proc:
            yield port, proc
    finally:
        config.unlink()


def sample_messages(count: int, low: int = 3500, high: int = 4500) -> list[tuple[str, bytes]]:
    """`count` corpus messages between low and high bytes, half ham, half spam: (label, raw)."""
    picks: list[tuple[str, bytes]] = []
    wanted = {"ham": count // 2, "spam": count - count // 2}
    for label, tarball in (("ham", "20030228_easy_ham.tar.bz2"), ("spam", "20030228_spam.tar.bz2")):
        with tarfile.open(corpus_path() / tarball) as tar:
            taken = 0
            for member in tar:
                if taken >= wanted[label]:
                    break
                if member.isfile() and "cmds" not in member.name and low <= member.size <= high:
                    raw = strip_mbox_line(tar.extractfile(member).read())  # type: ignore[union-attr]
                    if max(map(len, raw.splitlines())) <= 998:  # RFC 5321 4.5.3.1.6
                        picks.append((label, raw))
                        taken += 1
    return picks[:count]


def strip_mbox_line(raw: bytes) -> bytes:
    """The corpus files start with an mbox `From ` line, which is not part of the message."""
    if raw.startswith(b"From "):
        return raw.split(b"\n", 1)[1]
    return raw


def machine() -> dict[str, object]:
    """What the figures were measured on, and how busy it was."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(), "cpus": os.cpu_count(), "cpu": cpu_model(),
        "loadavg": os.getloadavg(), "python": platform.python_version(),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def tree(root: int) -> list[int]:
    """`root` and all its descendants (filterd's workers run in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU so far of these processes (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path.relative_to(REPO)}")
    return path


class RecordingSink:
    """The next hop for the memory bench: aiosmtpd in a thread of this process, keeping the
    SHA-256 of each message it gets with filterd's X-Spam-* headers taken off the top, so
    the bench can tell that what was sent arrived byte for byte (and hold no copy)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.digests: list[str] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                     data_size_limit=0)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        data = envelope.original_content
        while data.startswith((b"X-Spam-", b" ", b"\t")):   # ours, prepended (and folded)
            data = data[data.index(b"\r\n") + 2:]
        self.digests.append(hashlib.sha256(data).hexdigest())
        return "250 2.0.0 Ok"

    def __enter__(self) -> RecordingSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
