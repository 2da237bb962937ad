"""Model bench: the ONNX model alone, and the text pipeline (`Scorer.prepare`) per message.

    python -m bench.model [--model model_artifacts] [--threads 1 2] [--batches 1 8 32 128]
                          [--lengths 256 1024 4096] [--seconds 1.0]

Inference: `Scorer.infer` on batches of synthetic messages of exactly N tokens (random
vocabulary ids), each with the hashed features of a different real ~4 KB corpus message
(the wide branch pads a batch to its longest feature list, so this matters), on CPU with 1 and 2
onnxruntime threads, and on CUDA when onnxruntime has that provider. Each point repeats the
call for about `--seconds` and reports messages/s, tokens/s and ms per call.

Note: `Scorer.load` caps `max_tokens` at what the model was trained with (manifest
text.max_tokens), but that cap is applied in `prepare`; `infer` scores whatever ids it is
given chunk by chunk, so the 4096-token points measure the recurrent cost of a long message.

Prepare: `Scorer.prepare` on corpus messages, per size class, single thread.
Results go to bench/results/model-<time>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

from bench import harness
from filterd.pipeline.scorer import Scorer
from filterd.pipeline.text import Prepared


def timed(fn, seconds: float) -> tuple[int, float, float]:  # type: ignore[no-untyped-def]
    """Call fn until `seconds` have passed (at least twice, the first call not counted).

    Returns (calls, wall seconds, CPU seconds of this process, all its threads): on a shared
    machine the CPU time is the steadier figure.
    """
    fn()
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while calls < 2 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls, time.perf_counter() - start, time.process_time() - cpu


def synthetic(scorer: Scorer, templates: list[Prepared], tokens: int, batch: int,
              rng: np.random.Generator) -> list[Prepared]:
    """`batch` messages of exactly `tokens` random ids, each with the hashed features of the
    next real message in `templates` (their counts differ, so the batch pads as it would)."""
    size = len(scorer.vocab)
    return [Prepared(rng.integers(2, size, tokens, dtype=np.int64), t.feat_ids, t.feat_w)
            for t in (templates[i % len(templates)] for i in range(batch))]


def templates(scorer: Scorer) -> list[Prepared]:
    """The prepared form of 40 real ~4 KB corpus messages (half ham, half spam), interleaved."""
    picks = [scorer.prepare(raw) for _, raw in harness.sample_messages(40)]
    return [p for pair in zip(picks[:20], picks[20:], strict=True) for p in pair]


def bench_infer(scorer: Scorer, template: list[Prepared], args: argparse.Namespace,
                label: str) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    points = []
    for tokens in args.lengths:
        for batch in args.batches:
            msgs = synthetic(scorer, template, tokens, batch, rng)
            calls, secs, cpu = timed(lambda msgs=msgs: scorer.infer(msgs), args.seconds)
            point = {"device": label, "tokens": tokens, "batch": batch, "calls": calls,
                     "ms_per_call": round(secs * 1000 / calls, 3),
                     "cpu_ms_per_msg": round(cpu * 1000 / (calls * batch), 3),
                     "msgs_per_s": round(calls * batch / secs, 1),
                     "tokens_per_s": round(calls * batch * tokens / secs)}
            print(f"{label:>6} tokens={tokens:<5} batch={batch:<4} {point['msgs_per_s']:>9} msg/s "
                  f"{point['tokens_per_s']:>10} tok/s {point['ms_per_call']:>9} ms/call "
                  f"{point['cpu_ms_per_msg']:>7} CPU ms/msg", flush=True)
            points.append(point)
    return points


def bench_prepare(scorer: Scorer, seconds: float) -> list[dict[str, object]]:
    """Per-message cost of the text pipeline on corpus messages of three size classes."""
    rows = []
    for low, high in ((1000, 2000), (3500, 4500), (15000, 30000)):
        raws = [raw for _, raw in harness.sample_messages(40, low, high)]
        lengths = [len(scorer.prepare(raw).ids) for raw in raws]
        calls, secs, cpu = timed(lambda raws=raws: [scorer.prepare(r) for r in raws], seconds)
        row = {"bytes": f"{low}-{high}", "messages": len(raws),
               "us_per_msg": round(secs * 1e6 / (calls * len(raws)), 1),
               "cpu_us_per_msg": round(cpu * 1e6 / (calls * len(raws)), 1),
               "mean_tokens": round(statistics.mean(lengths), 1)}
        print(f"prepare {row['bytes']:>12} B: {row['us_per_msg']:>8} µs/msg "
              f"({row['cpu_us_per_msg']} CPU µs) "
              f"({row['mean_tokens']} tokens)", flush=True)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(harness.REPO / "model_artifacts"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--seconds", type=float, default=1.0, help="per point")
    parser.add_argument("--no-prepare", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"machine": harness.machine(), "args": vars(args),
                                  "providers": ort.get_available_providers()}
    scorer = Scorer.load(args.model, "cpu", threads=1)
    results["model"] = scorer.version
    template = templates(scorer)
    if not args.no_prepare:
        results["prepare"] = bench_prepare(scorer, args.seconds)
    points = []
    for threads in args.threads:
        cpu = Scorer.load(args.model, "cpu", threads=threads)
        points += bench_infer(cpu, template, args, f"cpu{threads}")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        cuda = Scorer.load(args.model, "cuda")
        points += bench_infer(cuda, template, args, "cuda")
    results["infer"] = points
    harness.write_results("model", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
