"""Memory bench: peak RSS of the daemon (all its processes) while big messages pass.

    python -m bench.memory [--size-mb 8] [--in-flight 4] [--targets filterd filterd-scored plain]

Starts the server under test in front of a recording next hop (aiosmtpd in this process,
which keeps a SHA-256 of each message it gets), sends `--in-flight` messages of `--size-mb`
at once (a corpus message with a base64 attachment of random bytes, 76-character lines),
each over its own SMTP session, checks that every one arrived intact (the bytes sent, after
the X-Spam-* headers filterd prepends) and, meanwhile, samples the resident memory (VmRSS)
of the server process and all its descendants every 5 ms. Reports the idle RSS, the peaks of
the summed RSS (the figure held against the target) and PSS (shared pages split between
processes), and each process's own high-water mark (VmHWM). Targets:

- `filterd`: the shipped config (`workers: auto`, two on two cores); 8 MB is below
  scoring.max_bytes (10 MB), so every message is scored: the path a postmaster's default takes;
- `filterd-scored`: scoring.max_bytes raised above the message, whatever its size;
- `plain`: bench/plain_relay.py, for comparison;
- `filterd-scored[workers=1]` and the like: config overrides. With several workers (the
  shipped `workers: auto`), the supervisor and every worker are counted.

The target (issue 12) is a peak RSS under 250 MB, summed over every process, with four 8 MB
messages in flight. Results go to bench/results/memory-<time>.json.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import smtplib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import harness
from bench.e2e import variant

TARGET_MB = 250


def group_pids(root: int) -> list[int]:
    return harness.tree(root)


def status_kb(pid: int, key: str, file: str = "status") -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM) or smaps_rollup (Pss)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Sums VmRSS and Pss over the server's process tree every 5 ms; keeps the peaks.

    RSS counts the pages workers share (Python, onnxruntime, the model) once per process;
    Pss splits them between the processes, so its sum is the memory the daemon really holds.
    """

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak_kb, self.peak_pss_kb = root, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        pids, listed = group_pids(self.root), time.monotonic()
        while not self.stop.is_set():
            if time.monotonic() - listed > 0.5:   # workers may come and go
                pids, listed = group_pids(self.root), time.monotonic()
            self.peak_kb = max(self.peak_kb, sum(status_kb(p, "VmRSS") for p in pids))
            self.peak_pss_kb = max(self.peak_pss_kb,
                                   sum(status_kb(p, "Pss", "smaps_rollup") for p in pids))
            time.sleep(0.005)


def big_message(size: int) -> bytes:
    """A real corpus message's headers and text, plus a base64 attachment up to `size` bytes."""
    raw = harness.sample_messages(1)[0][1].replace(b"\r\n", b"\n")
    head, _, body = raw.partition(b"\n\n")
    head = b"\n".join(line for line in head.split(b"\n")
                      if not line.lower().startswith((b"content-type", b"mime-version",
                                                      b"content-transfer-encoding", b" ", b"\t")))
    boundary = b"=-bench-boundary-="
    prefix = (head + b"\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\""
              + boundary + b"\"\n\n--" + boundary + b"\nContent-Type: text/plain\n\n" + body
              + b"\n--" + boundary + b"\nContent-Type: application/octet-stream\n"
              + b"Content-Transfer-Encoding: base64\n\n")
    suffix = b"\n--" + boundary + b"--\n"
    payload = base64.encodebytes(os.urandom((size - len(prefix) - len(suffix)) * 57 // 77))
    return (prefix + payload + suffix).replace(b"\n", b"\r\n")


def send(port: int, message: bytes) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
        return client.sendmail("big@bench.example", ["sink@bench.example"], message)


def measure(name: str, port: int, root: int, messages: list[bytes],
            sink: harness.RecordingSink) -> dict[str, object]:
    time.sleep(0.5)
    pids = group_pids(root)
    idle_kb = sum(status_kb(p, "VmRSS") for p in pids)
    sampler = Sampler(root)
    sampler.start()
    sink.digests.clear()
    start = time.perf_counter()
    with ThreadPoolExecutor(len(messages)) as pool:
        refused = [r for r in pool.map(lambda m: send(port, m), messages) if r]
    seconds = time.perf_counter() - start
    time.sleep(0.2)
    sampler.stop.set()
    sampler.join()
    hwm = {pid: round(status_kb(pid, "VmHWM") / 1024, 1) for pid in group_pids(root)}
    intact = sorted(sink.digests) == sorted(hashlib.sha256(m).hexdigest() for m in messages)
    row = {"target": name, "message_mb": round(len(messages[0]) / 2**20, 1),
           "in_flight": len(messages), "refused": refused, "intact": intact,
           "seconds": round(seconds, 2), "processes": len(pids),
           "idle_rss_mb": round(idle_kb / 1024, 1),
           "peak_rss_mb": round(sampler.peak_kb / 1024, 1),
           "peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1), "vmhwm_mb": hwm,
           "under_target": sampler.peak_kb / 1024 < TARGET_MB}
    print(f"{name:>15}: {len(messages)} x {row['message_mb']} MB, intact {intact}: "
          f"idle RSS {row['idle_rss_mb']} MB, peak RSS {row['peak_rss_mb']} MB, "
          f"peak PSS {row['peak_pss_mb']} MB "
          f"({len(pids)} processes, HWM {hwm}) in {row['seconds']} s", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=8)
    parser.add_argument("--in-flight", type=int, default=4, help="messages sent at once")
    parser.add_argument("--targets", nargs="+",
                        default=["filterd", "filterd[workers=1]", "plain"],
                        help="filterd, filterd-scored, plain; [key=value,...] adds config overrides")
    args = parser.parse_args()
    messages = [big_message(int(args.size_mb * 2**20)) for _ in range(args.in_flight)]
    rows = []
    with harness.RecordingSink() as sink:
        for name in args.targets:
            if name == "plain":
                with harness.plain_relay(sink.port) as (port, proc):
                    rows.append(measure(name, port, proc.pid, messages, sink))
                continue
            overrides = variant(name)
            if name.startswith("filterd-scored"):
                overrides["scoring.max_bytes"] = len(messages[0]) + 1
            log = harness.RESULTS / "filterd-memory.log"
            with harness.filterd(sink.port, log, **overrides) as (port, proc):
                rows.append(measure(name, port, proc.pid, messages, sink))
    harness.write_results("memory", {"machine": harness.machine(), "args": vars(args),
                                     "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
