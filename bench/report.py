"""Markdown tables of the latest results, for docs/performance.md.

    python -m bench.report [--since 20261126T1440]

Reads the newest bench/results/{e2e,model,memory,accuracy}-*.json (newer than --since, a
UTC stamp prefix, if given) and prints one table per bench with the machine and load.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench import harness


def latest(kind: str, since: str) -> dict | None:
    files = sorted(p for p in harness.RESULTS.glob(f"{kind}-*.json")
                   if p.stem.split("-", 1)[1] >= since)
    return json.loads(files[-1].read_text()) | {"file": files[-1].name} if files else None


def header(data: dict) -> str:
    m = data.get("machine", {})
    load = ", ".join(f"{x:.2f}" for x in m.get("loadavg", []))
    return (f"_{data['file']}: {m.get('date')} on {m.get('cpus')} × {m.get('cpu')}, "
            f"load average at start {load}_\n\n")


def table(rows: list[list[object]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def e2e(data: dict) -> str:
    ratio = {(r["target"], r["sessions"]): r for r in data.get("ratios", [])}
    rows = [[r["sessions"], r["target"], r["msgs_per_s"], r["p50_ms"], r["p99_ms"],
             r.get("server_cpu_ms_per_msg", "–"),
             ratio.get((r["target"], r["sessions"]), {}).get("cpu_vs_plain", "–"),
             ratio.get((r["target"], r["sessions"]), {}).get("throughput_vs_tuned", "–"),
             round(r["loadavg_1m"], 1)]
            for r in sorted(data["runs"], key=lambda r: r["sessions"])]
    return header(data) + table(rows, ["sessions", "target", "msg/s", "p50 ms", "p99 ms",
                                       "server CPU ms/msg", "CPU × plain", "msg/s × tuned",
                                       "load"])


def model(data: dict) -> str:
    out = header(data)
    if data.get("prepare"):
        out += table([[p["bytes"], p["mean_tokens"], p["us_per_msg"],
                              p.get("cpu_us_per_msg", "–")] for p in data["prepare"]],
                            ["message bytes", "tokens", "prepare µs/msg", "CPU µs/msg"])
    out += "\n" + table([[p["device"], p["tokens"], p["batch"], p["msgs_per_s"],
                          p["ms_per_call"], p.get("cpu_ms_per_msg", "–")]
                         for p in data["infer"]],
                        ["device", "tokens", "batch", "msg/s", "ms/call", "CPU ms/msg"])
    return out


def memory(data: dict) -> str:
    rows = [[r["target"], r["message_mb"], r["processes"], r["idle_rss_mb"], r["peak_rss_mb"],
             r.get("peak_pss_mb", "–"), r["seconds"]] for r in data["runs"]]
    return header(data) + table(rows, ["target", "message MB", "processes", "idle RSS MB",
                                       "peak RSS MB", "peak PSS MB", "seconds"])


def accuracy(data: dict) -> str:
    rows = [[data.get("model"), data.get("ham"), data.get("spam"), round(data["auc"], 5),
             round(data["recall_at_0.2pct_fpr"], 3),
             round(data["at_tag"]["spam_recall"], 3), round(data["at_tag"]["ham_fpr"], 4)]]
    return f"_{data['file']}_\n\n" + table(rows, ["model", "test ham", "test spam", "AUC",
                                                "recall at 0.2 % FPR", "recall at tag",
                                                "ham FPR at tag"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--since", default="")
    args = parser.parse_args()
    for kind, render in (("e2e", e2e), ("model", model), ("memory", memory),
                         ("accuracy", accuracy)):
        data = latest(kind, args.since)
        if data is not None:
            print(f"### {kind}\n\n{render(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
