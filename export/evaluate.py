"""`python -m export evaluate --model DIR (--corpus PATH | --ham PATH… --spam PATH…)`: JSON metrics.

With --corpus, only the model's own test split is scored by default (the split rule and
seed are read from the artifact's split.json), so the figures are on mail it never saw in
training; `--split all` scores everything. A model trained on all its mail (test_frac 0,
as the shipped one) has no test split: evaluate says so and exits 1. Paths given with
--ham/--spam are scored whole.
The scores come from onnxruntime through filterd's Scorer, exactly as the daemon computes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from export import metrics
from export.corpus import (READ_ERRORS, ReadStats, Sample, add_mail_arguments, check_mail_arguments,
                           read_mail, split_of)
from filterd.errors import ModelError
from filterd.pipeline.scorer import Scorer


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export evaluate", description=__doc__)
    p.add_argument("--model", type=Path, default=Path("model_artifacts"))
    add_mail_arguments(p)
    p.add_argument("--split", choices=["test", "train", "all"], default="test",
                   help="with --corpus: which part of the model's recorded split (default test)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    check_mail_arguments(p, args)
    return args


def select(samples: list[Sample], model: Path, split: str) -> list[Sample]:
    """The samples of one split, by the rule recorded in the artifact's split.json."""
    if split == "all":
        return samples
    rule = json.loads((model / "split.json").read_text(encoding="utf-8"))
    return [s for s in samples
            if split_of(s.raw, int(rule["seed"]), float(rule["val_frac"]),
                        float(rule["test_frac"])) == split]


def report(scorer: Scorer, samples: list[Sample]) -> dict[str, object]:
    """The figures the issue asks for, for the whole network and each branch alone."""
    labels = np.array([s.label for s in samples], dtype=np.int64)
    logits = scorer.infer_logits([scorer.prepare(s.raw) for s in samples])
    whole = metrics.sigmoid(logits[:, 0])
    # Ranks come from the logits: probabilities round to exactly 1.0 past a logit of about
    # 37 and would tie there.
    out: dict[str, object] = dict(metrics.summary(labels, logits[:, 0]))
    out["at_tag"] = metrics.at_threshold(labels, whole, scorer.thresholds.tag)
    out["at_reject"] = metrics.at_threshold(labels, whole, scorer.thresholds.reject)
    out["parts"] = {name: metrics.summary(labels, logits[:, col])
                    for col, name in ((1, "rnn"), (2, "wide"))}
    out["model"] = scorer.version
    return out


def no_split(model: Path, split: str) -> str | None:
    """Why --corpus cannot give a `split` of this model: one trained on all its mail
    (test_frac 0, as the shipped one) has no test split."""
    if split in ("all", "train"):
        return None
    rule = json.loads((model / "split.json").read_text(encoding="utf-8"))
    if float(rule[f"{split}_frac"]) > 0:
        return None
    return (f"{model} was trained on all its mail ({split}_frac 0 in split.json), so it has no "
            f"{split} split to score: give mail it never saw with --ham/--spam, or add --split all "
            "to score the corpus it was trained on (flattering figures); its cross-validated "
            "figures are in manifest.json")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        scorer = Scorer.load(args.model, "auto")
    except ModelError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 1
    if args.corpus is not None and (why := no_split(args.model, args.split)):
        print(f"evaluate: {why}", file=sys.stderr)
        return 1
    stats = ReadStats()
    try:
        samples = read_mail(args, stats, lambda corpus: select(corpus, args.model, args.split))
    except READ_ERRORS as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 1
    if not samples:
        print(f"evaluate: none of that mail is in the model's {args.split} split", file=sys.stderr)
        return 1
    figures = report(scorer, samples)
    figures["malformed_skipped"] = stats.malformed
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0
