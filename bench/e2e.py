"""End-to-end bench: smtp-source → (nothing | plain relay | filterd) → smtp-sink, side by side.

    python -m bench.e2e [--sessions 1 16 64] [--messages 3000] [--targets direct plain tuned filterd]

For each session count S, the same load goes straight into smtp-sink ("direct"), through
bench/plain_relay.py ("plain": one process, a next-hop connection per message, no scoring;
"tuned": two processes on SO_REUSEPORT, pooled next-hop connections, uvloop) and through
`filterd serve` with the shipped config and model ("filterd"). The load is Postfix's smtp-
source: all sessions but the probes, spread over up to four processes, each sending a
different ~4 KB corpus message (half ham, half spam) over one connection per session (-d,
like an MTA's connection cache). smtp-source cannot time single messages, so some sessions
are our own probes (one; four from 16 sessions on, so that every worker process is sampled):
aiosmtplib clients that send corpus messages one after another over one connection while the
load runs and time each transaction, MAIL FROM to the reply to the final dot. At S = 1 the
probe is the whole load.

Figures per run: messages/s (all sessions), probe latency p50/p99, and CPU seconds the server
under test (all its processes) spent per message, which is less noisy than throughput on a
shared machine. At the end each filterd run is set beside the references of the same S: its
CPU per message over plain's (issue 12: at most 1.3x) and its throughput over tuned's (at
least 0.8x). Results go to bench/results/e2e-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

from bench import harness

SOURCE_PROCESSES = 4
PROBES = 4
FILTERD_LOG = harness.RESULTS / "filterd-e2e.log"


async def probe(port: int, messages: list[bytes], done: asyncio.Event, limit: int) -> list[float]:
    """One session: send messages back to back until `done` (or `limit` sent); seconds each."""
    latencies: list[float] = []
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120, start_tls=False)
    await client.connect()
    try:
        while not done.is_set() and len(latencies) < limit:
            raw = messages[len(latencies) % len(messages)]
            start = time.perf_counter()
            await client.sendmail("probe@bench.example", ["sink@bench.example"], raw)
            latencies.append(time.perf_counter() - start)
    finally:
        client.close()
    return latencies


async def smtp_source(port: int, sessions: int, count: int, path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "smtp-source", "-d", "-s", str(sessions), "-m", str(count), "-F", str(path),
        "-M", "bench.example", "-f", "load@bench.example", "-t", "sink@bench.example",
        f"127.0.0.1:{port}", stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({proc.returncode}): {err.decode()[-500:]}")


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def probes_for(sessions: int) -> int:
    """Probe sessions among `sessions`: one, up to four from 16 sessions on, so that the
    latency sample covers every worker process (each connection sticks to one worker)."""
    return max(1, min(PROBES, sessions // 4))


async def run_load(port: int, sessions: int, total: int, files: list[Path],
                   messages: list[bytes]) -> dict[str, float]:
    """smtp-source sessions plus the probes; returns throughput and latency figures."""
    done = asyncio.Event()
    start = time.perf_counter()
    if sessions == 1:
        latencies = await probe(port, messages, done, total)
        sent = len(latencies)
    else:
        probes = probes_for(sessions)
        procs = min(SOURCE_PROCESSES, sessions - probes)
        loads = [smtp_source(port, s, m, files[i % len(files)]) for i, (s, m) in
                 enumerate(zip(split(sessions - probes, procs), split(total, procs),
                               strict=True))]
        probe_tasks = [asyncio.create_task(probe(port, messages[i::probes], done, 10**9))
                       for i in range(probes)]
        try:
            await asyncio.gather(*loads)
        finally:
            done.set()
        latencies = [x for found in await asyncio.gather(*probe_tasks) for x in found]
        sent = total + len(latencies)
    wall = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [
        latencies[0]] * 99
    return {"messages": sent, "seconds": round(wall, 3), "msgs_per_s": round(sent / wall, 1),
            "probe_n": len(latencies), "p50_ms": round(cuts[49] * 1000, 2),
            "p99_ms": round(cuts[98] * 1000, 2)}


async def measure(name: str, port: int, root: int | None, sessions: int, total: int,
                  files: list[Path], messages: list[bytes]) -> dict[str, object]:
    load = os.getloadavg()[0]
    pids = harness.tree(root) if root else []
    cpu0, load0 = harness.cpu_seconds(pids), load_cpu_seconds()
    logged = FILTERD_LOG.stat().st_size if FILTERD_LOG.exists() else 0
    load_figures = await run_load(port, sessions, total, files, messages)
    figures: dict[str, object] = dict(load_figures)
    sent = load_figures["messages"]
    cpu, load_cpu = harness.cpu_seconds(pids) - cpu0, load_cpu_seconds() - load0
    if root:
        figures["server_cpu_ms_per_msg"] = round(cpu * 1000 / sent, 3)
    # Everything the run made work: the server, smtp-source and the probes (the sink is the
    # same C program for every target and is left out).
    figures["total_cpu_ms_per_msg"] = round((cpu + load_cpu) * 1000 / sent, 3)
    if name.startswith("filterd"):
        figures["actions"] = actions(logged)
    figures.update(target=name, sessions=sessions, loadavg_1m=load)
    print(f"{name:>10} S={sessions:<3} {figures['msgs_per_s']:>8} msg/s  "
          f"p50 {figures['p50_ms']:>7} ms  p99 {figures['p99_ms']:>7} ms  "
          f"cpu/msg {figures.get('server_cpu_ms_per_msg', '-')} ms "
          f"(with load {figures['total_cpu_ms_per_msg']} ms)  (load {load:.2f})"
          f"{'  ' + str(figures['actions']) if 'actions' in figures else ''}", flush=True)
    return figures


def load_cpu_seconds() -> float:
    """User+system CPU of this process (the probes) and of its waited-for children (smtp-source)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def actions(offset: int) -> dict[str, int]:
    """What filterd did with the run's messages, from its log lines (a check that it scored)."""
    with FILTERD_LOG.open("rb") as log:
        log.seek(offset)
        found = re.findall(rb" action=(\w+) ", log.read())
    return dict(collections.Counter(a.decode() for a in found))


# The reference relays of issue 12, as bench/plain_relay.py options.
REFERENCES: dict[str, dict] = {
    "plain": {"workers": 1, "pool_size": 0, "uvloop": False},
    "tuned": {"workers": 2, "pool_size": 8, "uvloop": True},
}


def messages_for(sessions: int, base: int) -> int:
    return max(100, base // 10) if sessions == 1 else base


async def bench(args: argparse.Namespace, targets: dict[str, tuple[int, int | None]],
                files: list[Path], messages: list[bytes]) -> list[dict[str, object]]:
    for port, _ in targets.values():  # warm up: connections, model, caches
        await run_load(port, 8, 200, files, messages)
    runs = []
    for sessions in args.sessions:
        for round_ in range(args.rounds):   # targets interleaved: each round sees the same noise
            for name, (port, root) in targets.items():
                total = messages_for(sessions, args.messages)
                run = await measure(name, port, root, sessions, total, files, messages)
                runs.append({**run, "round": round_})
    return runs


def variant(name: str) -> dict[str, object]:
    """`filterd[workers=2,scoring.max_wait_ms=5]` → config overrides for that target."""
    import yaml

    inner = name.partition("[")[2].rstrip("]")
    return {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in inner.split(",") if kv)}


def _ratio(run: dict[str, object], ref: dict[str, object] | None, key: str) -> float | None:
    if ref is None or key not in run or key not in ref:
        return None
    return round(float(run[key]) / float(ref[key]), 2)  # type: ignore[arg-type]


_RATIOS = {"cpu_vs_plain": ("plain", "server_cpu_ms_per_msg"),
           "total_cpu_vs_plain": ("plain", "total_cpu_ms_per_msg"),
           "throughput_vs_plain": ("plain", "msgs_per_s"),
           "throughput_vs_tuned": ("tuned", "msgs_per_s"),
           "p99_vs_plain": ("plain", "p99_ms")}


def ratios(runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each filterd run against the references of the same session count and round; over
    several rounds, the median of the rounds' ratios (and each round's in `rounds`)."""
    by = {(r["target"], r["sessions"], r.get("round", 0)): r for r in runs}
    per: dict[tuple[object, object], list[dict[str, float | None]]] = collections.defaultdict(list)
    for (target, sessions, round_), run in by.items():
        if str(target).startswith("filterd"):
            per[(target, sessions)].append(
                {key: _ratio(run, by.get((ref, sessions, round_)), field)
                 for key, (ref, field) in _RATIOS.items()})
    out: list[dict[str, object]] = []
    for (target, sessions), rounds in per.items():
        entry: dict[str, object] = {"target": target, "sessions": sessions}
        for key in _RATIOS:
            found = [v for r in rounds if (v := r[key]) is not None]
            entry[key] = round(statistics.median(found), 2) if found else None
        if len(rounds) > 1:
            entry["rounds"] = rounds
        out.append(entry)
    for r in out:
        many = r.get("rounds")
        print(f"{r['target']:>10} S={r['sessions']:<3} cpu/msg x{r['cpu_vs_plain']} of plain "
              f"(x{r['total_cpu_vs_plain']} with the load's), "
              f"throughput x{r['throughput_vs_tuned']} of tuned (x{r['throughput_vs_plain']} "
              f"of plain), p99 x{r['p99_vs_plain']} of plain"
              f"{f'  (median of {len(many)} rounds)' if isinstance(many, list) else ''}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--messages", type=int, default=3000, help="per run (a tenth at S=1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the targets this many times, interleaved; ratios are the "
                             "median of the rounds' (a steadier figure on a busy machine)")
    parser.add_argument("--targets", nargs="+", default=["direct", "plain", "tuned", "filterd"],
                        help="direct, plain (a connection per message), tuned (two workers, "
                             "pool, uvloop), filterd, "
                             "filterd[key=value,...] (config overrides for that target)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML",
                        help="filterd config overrides, e.g. workers=2 scoring.max_wait_ms=5")
    args = parser.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    picks = harness.sample_messages(40)
    messages = [raw for _, raw in picks]
    with tempfile.TemporaryDirectory(prefix="filterd-bench-") as tmp:
        files = []  # two ham, two spam for the smtp-source processes (picks are ham first)
        for i in (0, len(messages) // 2, 1, len(messages) // 2 + 1):
            files.append(Path(tmp) / f"m{i}.eml")
            files[-1].write_bytes(messages[i])
        runs = asyncio.run(with_servers(args, overrides, files, messages))
    results = {"machine": harness.machine(), "args": vars(args), "runs": runs,
               "ratios": ratios(runs)}
    harness.write_results("e2e", results)
    return 0


async def with_servers(args: argparse.Namespace, overrides: dict[str, object],
                       files: list[Path], messages: list[bytes]) -> list[dict[str, object]]:
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(harness.smtp_sink())
        targets: dict[str, tuple[int, int | None]] = {}
        for name in args.targets:
            if name == "direct":
                targets[name] = (sink, None)
            elif name in REFERENCES:
                port, proc = stack.enter_context(harness.plain_relay(sink, **REFERENCES[name]))
                targets[name] = (port, proc.pid)
            elif name.startswith("filterd"):
                harness.RESULTS.mkdir(parents=True, exist_ok=True)
                port, proc = stack.enter_context(
                    harness.filterd(sink, FILTERD_LOG, **{**overrides, **variant(name)}))
                targets[name] = (port, proc.pid)
        return await bench(args, targets, files, messages)


if __name__ == "__main__":
    sys.exit(main())
