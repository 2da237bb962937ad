"""Learning online, TREC style: `python -m bench.online [--shuffles 3]`.

Trains on the older folders of the SpamAssassin corpus (easy_ham, spam: 2002), then streams
the newer ones (easy_ham_2, hard_ham, spam_2) in Date order through a real `filterd serve`
(spamd listener, allow_tell): each message is scored (REPORT), then taught its true class
(TELL) per the protocol, and the figures are those of the scores given before each lesson
(TREC's immediate feedback). Protocols:

  static       no lessons
  every        TELL after every message
  mistakes     TELL only when filterd was wrong (the logit on the wrong side of 0)
  bogofilter   Debian's bogofilter, trained on the same older mail, registering every
               message after scoring it (-T, then -s/-n)

The filterd model is bench/online_model.py's: the n-gram half trained on the older mail
(the shipped model has seen the stream). The order within each day is shuffled with
`--shuffles` seeds; the table gives the mean and the range over them. Also measured: TELL
latency (each TELL of the `every` runs) and throughput (`--burst` TELLs from 16 clients at
once, into a fresh store). Results go to bench/results/online-<time>.json.
"""

from __future__ import annotations

import argparse
import email.utils
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench import harness
from bench.online_model import build
from export import metrics
from export.corpus import iter_path

OLDER = ("20030228_easy_ham.tar.bz2", "20030228_spam.tar.bz2")
NEWER = ("20030228_easy_ham_2.tar.bz2", "20030228_hard_ham.tar.bz2", "20050311_spam_2.tar.bz2")
REPORTED = re.compile(rb"spam probability ([\d.]+) \((-?[\d.]+) points")
FPR = 0.005


def read(names: tuple[str, ...]) -> list[tuple[bytes, int]]:
    out = []
    for name in names:
        label = int("spam" in name)
        out += [(s.raw, label) for s in iter_path(harness.corpus_path() / name, label)]
    return out


def day_of(raw: bytes) -> str:
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    match = re.search(rb"^Date:[ \t]*(.+)$", head, re.M | re.I)
    try:
        when = email.utils.parsedate_to_datetime(match.group(1).decode("latin-1")) if match else None
    except (TypeError, ValueError):
        when = None
    return when.strftime("%Y-%m-%d") if when else "9999-undated"


def stream(newer: list[tuple[bytes, int]], seed: int) -> list[tuple[bytes, int]]:
    """Date order by day; within a day a shuffle by `seed`."""
    days: dict[str, list[tuple[bytes, int]]] = defaultdict(list)
    for item in newer:
        days[day_of(item[0])].append(item)
    rng = np.random.default_rng(seed)
    return [days[d][i] for d in sorted(days) for i in rng.permutation(len(days[d]))]


def request(port: int, verb: str, raw: bytes, headers: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"{verb} SPAMC/1.5\r\n{headers}Content-length: {len(raw)}\r\n\r\n".encode() + raw)
        sock.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def logit(port: int, raw: bytes) -> float:
    """REPORT's probability as a logit; past what 6 decimals show, its points (5 + 10 x logit)."""
    match = REPORTED.search(request(port, "REPORT", raw))
    assert match, "no score in the REPORT answer"
    p, points = float(match.group(1)), float(match.group(2))
    return float(np.log(p / (1 - p))) if 0 < p < 1 else (points - 5) / 10


def tell(port: int, raw: bytes, label: int) -> float:
    """One TELL; its latency in seconds."""
    start = time.perf_counter()
    answer = request(port, "TELL", raw, f"Message-class: {'spam' if label else 'ham'}\r\nSet: local\r\n")
    assert b" 0 EX_OK" in answer.split(b"\r\n")[0], answer[:200]
    return time.perf_counter() - start


def run_filterd(artifact: Path, order: list[tuple[bytes, int]], mode: str,
                work: Path) -> tuple[list[float], list[float]]:
    """(scores before each lesson, TELL latencies) of one stream through a fresh filterd."""
    spamd, store = harness.free_port(), Path(tempfile.mkdtemp(dir=work))
    overrides = {"spamd": {"listen": f"127.0.0.1:{spamd}", "allow_tell": True}, "workers": 1,
                 "learning.store": str(store), "model.path": str(artifact), "model.device": "cpu"}
    scores, latencies = [], []
    with harness.filterd(harness.free_port(), work / "filterd.log", **overrides):
        for raw, label in order:
            scores.append(logit(spamd, raw))
            wrong = (scores[-1] >= 0) != bool(label)
            if mode == "every" or (mode == "mistakes" and wrong):
                latencies.append(tell(spamd, raw, label))
    return scores, latencies


def burst(artifact: Path, messages: list[tuple[bytes, int]], work: Path) -> float:
    """TELLs a second, 16 clients at once, into a fresh store."""
    spamd, store = harness.free_port(), Path(tempfile.mkdtemp(dir=work))
    overrides = {"spamd": {"listen": f"127.0.0.1:{spamd}", "allow_tell": True}, "workers": 1,
                 "learning.store": str(store), "model.path": str(artifact), "model.device": "cpu"}
    with harness.filterd(harness.free_port(), work / "filterd.log", **overrides):
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda item: tell(spamd, *item), messages))
        return len(messages) / (time.perf_counter() - start)


def run_bogofilter(older: list[tuple[bytes, int]], order: list[tuple[bytes, int]],
                   work: Path) -> list[float]:
    """bogofilter's spamicity of each message before it registers it."""
    db = Path(tempfile.mkdtemp(dir=work))
    for label in (0, 1):
        files = work / "files"
        shutil.rmtree(files, ignore_errors=True)
        files.mkdir()
        for i, (raw, lab) in enumerate(older):
            if lab == label:
                (files / f"{i}").write_bytes(raw)
        subprocess.run(["bogofilter", "-d", str(db), "-s" if label else "-n", "-B",
                        *(str(p) for p in files.iterdir())], check=True)
    scores = []
    for raw, label in order:
        out = subprocess.run(["bogofilter", "-d", str(db), "-T"], input=raw, capture_output=True).stdout
        scores.append(float(out.split()[1]))
        subprocess.run(["bogofilter", "-d", str(db), "-s" if label else "-n"], input=raw, check=True)
    return scores


def figures(labels: list[int], scores: list[float]) -> dict[str, float]:
    y, s = np.array(labels, bool), np.array(scores)
    point = metrics.at_threshold(y, s, metrics.threshold_at_fpr(s[~y], FPR))
    auc = metrics.roc_auc(y, s)
    return {"auc": auc, "one_minus_roca_pct": 100 * (1 - auc), "recall": point["spam_recall"]}


def table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = ["| protocol | AUC | 1-ROCA % | spam recall at <= 0.5 % ham flagged |", "| --- | --- | --- | --- |"]
    for name, runs in results.items():
        cells = []
        for key, fmt in (("auc", "{:.4f}"), ("one_minus_roca_pct", "{:.2f}"), ("recall", "{:.1%}")):
            values = [r[key] for r in runs]
            cells.append(f"{fmt.format(statistics.mean(values))} ({fmt.format(min(values))}–"
                         f"{fmt.format(max(values))})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shuffles", type=int, default=3)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    older, newer = read(OLDER), read(NEWER)
    print(f"older: {len(older)} messages, stream: {len(newer)} "
          f"({sum(label for _, label in newer)} spam)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-online-") as tmp:
        work = Path(tmp)
        artifact = build(harness.REPO / "model_artifacts", work / "model", older)
        results: dict[str, list[dict[str, float]]] = defaultdict(list)
        latencies: list[float] = []
        for seed in range(args.shuffles):
            order = stream(newer, seed)
            labels = [label for _, label in order]
            for mode in ("static", "every", "mistakes"):
                scores, lat = run_filterd(artifact, order, mode, work)
                results[f"filterd, {mode}"].append(figures(labels, scores))
                latencies += lat if mode == "every" else []
                print(seed, mode, results[f"filterd, {mode}"][-1], flush=True)
            results["bogofilter, every"].append(figures(labels, run_bogofilter(older, order, work)))
            print(seed, "bogofilter", results["bogofilter, every"][-1], flush=True)
        rate = burst(artifact, newer[: args.burst], work)
    ms = sorted(x * 1000 for x in latencies)
    speed = {"tell_ms_median": statistics.median(ms), "tell_ms_p99": ms[int(0.99 * (len(ms) - 1))],
             "burst_tells_per_s": rate, "burst": args.burst}
    print(table(results))
    print(f"TELL latency: median {speed['tell_ms_median']:.1f} ms, p99 {speed['tell_ms_p99']:.1f} ms "
          f"(one at a time); throughput {rate:.0f} TELLs/s ({args.burst} from 16 clients at once)")
    harness.write_results("online", {"machine": harness.machine(), "results": results, "speed": speed,
                                     "shuffles": args.shuffles})


if __name__ == "__main__":
    main()
