"""What-if bench: scoring cost of smaller networks, to weigh speed against accuracy.

    python -m bench.model_sizes [--hidden 128 64 32] [--tokens 128 256] [--batch 16]

For each GRU width it exports an untrained SpamNet of the shipped design (export/model.py,
same vocabulary, same wide branch; the weights do not change the cost) into a copy of the
shipped artifact, loads it with `Scorer` on one CPU thread and times `infer` on batches of
synthetic messages of each token count. Accuracy of such a model is a training question
(docs/model.md); this only says what it would save. Needs the train extra
(torch). Results go to bench/results/model_sizes-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import harness
from bench.model import synthetic, templates, timed
from filterd.pipeline.artifact import sha256_file
from filterd.pipeline.scorer import Scorer


def variant(shipped: Path, hidden: int, dest: Path) -> Path:
    """A copy of the shipped artifact whose model.onnx is an untrained net with this width."""
    from export import to_onnx
    from export.model import ModelConfig, SpamNet

    shutil.copytree(shipped, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    cfg = ModelConfig(vocab_size=int(manifest["model"]["vocab_size"]),
                      embed=int(manifest["model"]["embed"]), hidden=hidden)
    to_onnx.export(SpamNet(cfg), dest / "model.onnx")
    manifest["model"]["hidden"] = hidden
    manifest["files"]["model.onnx"] = sha256_file(dest / "model.onnx")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(harness.REPO / "model_artifacts"))
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64, 32])
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in args.hidden:
            scorer = Scorer.load(variant(Path(args.model), hidden, Path(tmp) / f"h{hidden}"),
                                 "cpu", threads=1)
            template = templates(scorer)
            for tokens in args.tokens:
                msgs = synthetic(scorer, template, tokens, args.batch, rng)
                calls, secs, cpu = timed(lambda msgs=msgs, s=scorer: s.infer(msgs), args.seconds)
                point = {"hidden": hidden, "tokens": tokens, "batch": args.batch,
                         "ms_per_msg": round(secs * 1000 / (calls * args.batch), 3),
                         "cpu_ms_per_msg": round(cpu * 1000 / (calls * args.batch), 3)}
                print(f"hidden={hidden:<4} tokens={tokens:<4} batch={args.batch}: "
                      f"{point['ms_per_msg']} ms/msg, {point['cpu_ms_per_msg']} CPU ms/msg",
                      flush=True)
                points.append(point)
    harness.write_results("model_sizes", {"machine": harness.machine(), "args": vars(args),
                                          "points": points})
    return 0


if __name__ == "__main__":
    sys.exit(main())
