"""Profile `filterd serve` with py-spy under the 16-session smtp-source load.

    python -m bench.profile [--sessions 16] [--messages 6000] [--set workers=2 ...]

Starts smtp-sink and filterd (shipped config unless --set), pushes the e2e load (see
bench/e2e.py) and records every filterd process with `py-spy record --subprocesses` in raw
(collapsed stack) format, --nonblocking so the sampler does not slow the daemon down.
Prints where the time goes: samples by thread, by area (SMTP server, relay, text pipeline,
onnxruntime, event loop, idle) and the top functions by own time. Writes the collapsed stacks
(bench/results/profile-<time>.txt, for flamegraph.pl or speedscope) and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import harness
from bench.e2e import run_load

# Area of a stack: the first rule (in this order) whose pattern occurs in the stack wins.
AREAS = (
    ("onnxruntime", ("run (onnxruntime", "session.py")),
    ("text pipeline", ("text.py", "features.py", "vocab.py")),
    ("scorer glue", ("scorer.py", "batcher.py")),
    ("relay (aiosmtplib)", ("aiosmtplib", "relay.py")),
    ("handler/headers", ("handler.py", "verdict.py")),
    ("SMTP server (aiosmtpd)", ("aiosmtpd", "smtpd.py")),
    ("logging/metrics", ("logging/", "prometheus_client")),
    ("event loop", ("asyncio",)),
)


def area(stack: str) -> str:
    for name, patterns in AREAS:
        if any(p in stack for p in patterns):
            return name
    return "other"


def summarise(raw: Path, top: int = 25) -> dict[str, object]:
    """Collapsed stacks → samples per thread, per area, and top own-time functions."""
    by_area: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        by_thread[frames[0].split(" ")[0] + " " + (frames[1] if len(frames) > 1 else "")] += n
        by_area[area(stack)] += n
        own[frames[-1]] += n
    def share(counter: collections.Counter[str], k: int) -> list[tuple[str, float]]:
        return [(key, round(100 * v / max(total, 1), 1)) for key, v in counter.most_common(k)]
    return {"samples": total, "areas_pct": share(by_area, 20),
            "threads_pct": share(by_thread, 10), "top_own_pct": share(own, top)}


async def drive(port: int, sessions: int, total: int, files: list[Path],
                messages: list[bytes]) -> dict[str, float]:
    return await run_load(port, sessions, total, files, messages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true",
                        help="only samples holding the GIL (Python work; hides onnxruntime)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    messages = [raw for _, raw in harness.sample_messages(40)]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    raw = harness.RESULTS / f"profile-{stamp}.txt"
    with tempfile.TemporaryDirectory() as tmp, harness.smtp_sink() as sink, \
            harness.filterd(sink, harness.RESULTS / "filterd-profile.log", **overrides) as (port, proc):
        files = []
        for i in (0, len(messages) // 2, 1, len(messages) // 2 + 1):
            files.append(Path(tmp) / f"m{i}.eml")
            files[-1].write_bytes(messages[i])
        asyncio.run(drive(port, 8, 300, files, messages))   # warm up
        spy = subprocess.Popen([pyspy, "record", "-p", str(proc.pid), "--subprocesses", "-t",
                                "--nonblocking", "-r", str(args.rate), "-f", "raw",
                                *(["--gil"] if args.gil else []),
                                "-o", str(raw)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        time.sleep(1.0)
        figures = asyncio.run(drive(port, args.sessions, args.messages, files, messages))
        spy.send_signal(2)   # SIGINT: py-spy writes its output and exits
        _, err = spy.communicate(timeout=60)
    if not raw.exists():
        print(err.decode(), file=sys.stderr)
        return 1
    summary = summarise(raw)
    print(f"load: {figures}")
    for key in ("areas_pct", "threads_pct", "top_own_pct"):
        print(f"\n{key}:")
        for name, pct in summary[key]:  # type: ignore[attr-defined]
            print(f"  {pct:5.1f}%  {name}")
    harness.write_results("profile", {"machine": harness.machine(), "args": vars(args),
                                      "load": figures, "summary": summary, "stacks": raw.name})
    return 0


if __name__ == "__main__":
    sys.exit(main())
