"""`python -m export train`: corpus → cross-validation → training on all mail → artifact.

Reads top to bottom (the recipe itself is export/recipe.py):

1. the mail is read once and analysed once (text.analyze);
2. `folds`-fold cross-validation: per fold, vocabulary and IDF from its training part, the
   wide half (LinearSVC) and the GRU trained alone, out-of-fold logits for every message;
3. the combination (a_wide, a_rnn, bias) is a logistic regression on those out-of-fold
   logits, and the `tag`/`reject` thresholds are calibrated on the combined out-of-fold
   scores: mail the model that made them never saw;
4. the shipped network is trained the same way on all the mail (minus an optional
   `test_frac` held out for the manifest), the combination folded into it, exported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from export import artifacts, fit, metrics, recipe, summary, validate
from export.config import ModelConfig, TrainConfig, apply_overrides, split_overrides
from export.corpus import (READ_ERRORS, ReadStats, Sample, add_mail_arguments, check_mail_arguments,
                           read_mail, split_of)
from filterd.pipeline import text
from filterd.pipeline.text import Analysis, Prepared

PARTS = ("whole", "rnn", "wide")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export train", description=__doc__)
    add_mail_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="artifact folder to write (a new one)")
    p.add_argument("--force", action="store_true", help="write into --out even if it holds files")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig/ModelConfig field, e.g. --set epochs=2")
    p.add_argument("--dry-run", action="store_true", help="train one batch (smoke test)")
    args = p.parse_args(argv)
    check_mail_arguments(p, args)
    return args


def subsample(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    """At most `limit` messages, keeping the ham/spam ratio (for smoke tests)."""
    if limit <= 0 or limit >= len(samples):
        return samples
    order = np.random.default_rng(seed).permutation(len(samples))
    return [samples[i] for i in sorted(order[:limit])]


def check_classes(parts: dict[str, list[Sample]], fold: np.ndarray, labels: np.ndarray,
                  folds: int) -> str | None:
    for name, part in parts.items():
        if part and {s.label for s in part} != {0, 1}:
            return f"the {name} split holds no ham or no spam ({len(part)} messages)"
    for f in range(folds):
        if set(labels[fold == f].tolist()) != {0, 1}:
            return f"cross-validation fold {f + 1} of {folds} holds no ham or no spam"
    return None


def configure(args: argparse.Namespace) -> tuple[TrainConfig, ModelConfig] | None:
    cfg, mcfg = TrainConfig(), ModelConfig()
    train_pairs, model_pairs = split_overrides(args.overrides)
    try:
        apply_overrides(cfg, train_pairs)
        apply_overrides(mcfg, model_pairs)
    except ValueError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return None
    cfg.dry_run = cfg.dry_run or args.dry_run
    return cfg, mcfg


def run(args: argparse.Namespace) -> int:
    configured = configure(args)
    if configured is None:
        return 2
    cfg, mcfg = configured
    if args.out.exists() and not args.force and (not args.out.is_dir() or any(args.out.iterdir())):
        print(f"train: {args.out} already exists: pass --force to overwrite the model in it",
              file=sys.stderr)
        return 1
    # Same seed and data, same weights (bit for bit on CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(cfg.threads)
    started = time.monotonic()
    stats = ReadStats()
    try:
        mail = read_mail(args, stats)
    except READ_ERRORS as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 1
    samples = subsample(mail, cfg.max_messages, cfg.split_seed)
    print(f"read {len(samples)} messages, malformed skipped: {stats.malformed or 'none'}",
          file=sys.stderr)
    parts: dict[str, list[Sample]] = {"train": [], "test": []}
    for s in samples:
        parts["test" if split_of(s.raw, cfg.split_seed, 0.0, cfg.test_frac) == "test"
              else "train"].append(s)
    labels = np.array([s.label for s in parts["train"]], dtype=np.int64)
    fold = fit.folds_of([s.raw for s in parts["train"]], cfg.folds)
    problem = check_classes(parts, fold, labels, cfg.folds)
    if problem:
        print(f"train: {problem}: give more mail of both kinds", file=sys.stderr)
        return 1
    analyses = [text.analyze(s.raw, cfg.max_tokens) for s in parts["train"]]
    model = fit.fit_model(cfg, mcfg, analyses, labels, fold)
    whole_oof = model.combination.apply(model.oof[:, 0], model.oof[:, 1])
    report = {"val": {name: metrics.summary(labels, scores) for name, scores in
                      zip(PARTS, (whole_oof, model.oof[:, 1], model.oof[:, 0]))},
              "cv": validate.cv_figures(model.oof, labels, fold, cfg)}
    forward = forward_validation(cfg, mcfg, parts["train"], analyses)
    if forward is not None:
        report["forward"] = forward
    net = fit.fold_in(model.halves, model.combination)
    items = model.halves.encode(analyses[:256], cfg)
    parity_logits = recipe.all_logits(net, items)[:, 0]
    if parts["test"]:
        test_items = [text.prepare(s.raw, model.halves.vocab, model.halves.idf, cfg.max_tokens,
                                   cfg.features) for s in parts["test"]]
        test_labels = np.array([s.label for s in parts["test"]])
        test_logits = recipe.all_logits(net, test_items)
        report["test"] = {name: metrics.summary(test_labels, test_logits[:, col])
                          for col, name in enumerate(PARTS)}
    print(summary.render(report, model.thresholds, model.combination), file=sys.stderr)
    artifacts.write(args.out, net, model.halves.vocab, model.halves.idf, cfg=cfg,
                    mcfg=model.halves.mcfg, parts=parts, stats=stats, metrics=report,
                    thresholds=model.thresholds, history=[{"gru_epochs": model.halves.epochs}],
                    combination=model.combination._asdict(), parity_items=items,
                    parity_logits=parity_logits, seconds=time.monotonic() - started, argv=sys.argv)
    return 0


def forward_validation(cfg: TrainConfig, mcfg: ModelConfig, samples: list[Sample],
                       analyses: list[Analysis]) -> dict | None:
    """The recipe on the older mail, scored on the newer (export/validate.py): `auto` takes
    the corpus's folders where they are there, else the Date headers."""
    if cfg.forward == "off" or cfg.dry_run:
        return None
    for how in (("folders", "date") if cfg.forward == "auto" else (cfg.forward,)):
        run = validate.forward_run(cfg, mcfg, samples, analyses, how)
        if run is not None:
            ref = validate.reference_scores(samples, run)
            return validate.forward_figures(run, cfg, ref)
    return None


def main(argv: list[str]) -> int:
    return run(parse_args(argv))


__all__ = ["Prepared", "main"]
