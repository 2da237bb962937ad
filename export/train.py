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
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from export import artifacts, metrics, recipe, summary
from export.config import ModelConfig, TrainConfig, apply_overrides, split_overrides
from export.corpus import (READ_ERRORS, ReadStats, Sample, add_mail_arguments, check_mail_arguments,
                           read_mail, split_of)
from export.model import SpamNet
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
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                   help="accepted for compatibility; the recipe trains on the CPU")
    args = p.parse_args(argv)
    check_mail_arguments(p, args)
    return args


def subsample(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    """At most `limit` messages, keeping the ham/spam ratio (for smoke tests)."""
    if limit <= 0 or limit >= len(samples):
        return samples
    order = np.random.default_rng(seed).permutation(len(samples))
    return [samples[i] for i in sorted(order[:limit])]


class Fitted:
    """One run of the recipe on some mail: inputs, both halves and the network."""

    def __init__(self, cfg: TrainConfig, mcfg: ModelConfig, analyses: list[Analysis],
                 labels: np.ndarray) -> None:
        self.vocab, self.idf = recipe.fit_inputs(analyses, cfg.vocab_size, cfg.min_count,
                                                 cfg.features)
        items = recipe.encode(analyses, self.vocab, self.idf, cfg.features)
        self.w, self.b = recipe.fit_wide_svm(items, labels, cfg.wide_c, cfg.wide_ham_weight)
        self.mcfg = dataclasses.replace(mcfg, vocab_size=len(self.vocab))
        self.net = recipe.new_net(self.mcfg, cfg.seed)
        snaps = recipe.fit_rnn(self.net, items, labels, epochs=1 if cfg.dry_run else cfg.epochs,
                               lr=cfg.lr, weight_decay=cfg.weight_decay,
                               batch_size=cfg.batch_size, seed=cfg.seed,
                               max_batches=1 if cfg.dry_run else 0)
        self.net.load_state_dict(recipe.average_states(snaps[-cfg.average:]), strict=False)
        self.epochs = len(snaps)

    def logits(self, analyses: list[Analysis],
               cfg: TrainConfig) -> tuple[list[Prepared], np.ndarray, np.ndarray]:
        items = recipe.encode(analyses, self.vocab, self.idf, cfg.features)
        return items, recipe.wide_logits(self.w, self.b, items), recipe.rnn_logits(self.net, items)


def cross_validate(cfg: TrainConfig, mcfg: ModelConfig, analyses: list[Analysis],
                   labels: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """(n, 2) out-of-fold logits [wide, rnn] of every message."""
    oof = np.zeros((len(labels), 2))
    for f in range(cfg.folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        started = time.monotonic()
        fitted = Fitted(cfg, mcfg, [analyses[i] for i in tr], labels[tr])
        _, wide, rnn = fitted.logits([analyses[i] for i in te], cfg)
        oof[te] = np.stack([wide, rnn], axis=1)
        print(f"fold {f + 1}/{cfg.folds}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return oof


def cv_figures(oof: np.ndarray, labels: np.ndarray, fold: np.ndarray, cfg: TrainConfig) -> dict:
    """Per-fold figures (mean, min, max) of each half and of the whole; the whole of each
    fold uses a combination fitted on the other folds, so it is out-of-fold too."""
    whole = np.zeros(len(labels))
    for f in range(cfg.folds):
        comb = recipe.fit_combination(oof[fold != f, 0], oof[fold != f, 1], labels[fold != f],
                                      cfg.combine_c)
        whole[fold == f] = comb.apply(oof[fold == f, 0], oof[fold == f, 1])
    out: dict = {"folds": cfg.folds, "rule": "sha256('filterd-cv\\0' + message) mod folds"}
    for name, scores in (("whole", whole), ("rnn", oof[:, 1]), ("wide", oof[:, 0])):
        rows = [metrics.summary(labels[fold == f], scores[fold == f]) for f in range(cfg.folds)]
        out[name] = {key: {"mean": float(np.mean(v)), "min": float(np.min(v)),
                           "max": float(np.max(v))}
                     for key in ("auc", "recall_at_0.2pct_fpr")
                     for v in [[r[key] for r in rows]]}
    return out


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
    fold = np.array([recipe.fold_of(s.raw, cfg.folds) for s in parts["train"]], dtype=np.int64)
    problem = check_classes(parts, fold, labels, cfg.folds)
    if problem:
        print(f"train: {problem}: give more mail of both kinds", file=sys.stderr)
        return 1
    analyses = [text.analyze(s.raw, cfg.max_tokens) for s in parts["train"]]
    oof = cross_validate(cfg, mcfg, analyses, labels, fold)
    comb = recipe.fit_combination(oof[:, 0], oof[:, 1], labels, cfg.combine_c)
    whole_oof = comb.apply(oof[:, 0], oof[:, 1])
    thresholds = metrics.calibrate(labels, metrics.sigmoid(whole_oof))
    report = {"val": {name: metrics.summary(labels, scores) for name, scores in
                      zip(PARTS, (whole_oof, oof[:, 1], oof[:, 0]))},
              "cv": cv_figures(oof, labels, fold, cfg)}
    final = Fitted(cfg, mcfg, analyses, labels)
    net = fold_in(final, comb)
    items = recipe.encode(analyses[:256], final.vocab, final.idf, cfg.features)
    parity_logits = recipe.all_logits(net, items)[:, 0]
    if parts["test"]:
        test_items = [text.prepare(s.raw, final.vocab, final.idf, cfg.max_tokens, cfg.features)
                      for s in parts["test"]]
        test_labels = np.array([s.label for s in parts["test"]])
        test_logits = recipe.all_logits(net, test_items)
        report["test"] = {name: metrics.summary(test_labels, test_logits[:, col])
                          for col, name in enumerate(PARTS)}
    print(summary.render(report, thresholds, comb), file=sys.stderr)
    artifacts.write(args.out, net, final.vocab, final.idf, cfg=cfg, mcfg=final.mcfg,
                    parts=parts, stats=stats, metrics=report, thresholds=thresholds,
                    history=[{"gru_epochs": final.epochs}], combination=comb._asdict(),
                    parity_items=items, parity_logits=parity_logits,
                    seconds=time.monotonic() - started, argv=sys.argv)
    return 0


def fold_in(fitted: Fitted, comb: recipe.Combination) -> SpamNet:
    """The shipped network: wide weights scaled by a_wide (so wide.npy holds exactly what
    enters the whole logit), the combination's bias in the wide bias, a_rnn on the GRU."""
    net = fitted.net.cpu().eval()
    with torch.no_grad():
        net.wide.copy_(torch.from_numpy(fitted.w * np.float32(comb.a_wide)))
        net.wide_bias.fill_(comb.a_wide * fitted.b + comb.bias)
        net.rnn_weight.fill_(comb.a_rnn)
    return net


def main(argv: list[str]) -> int:
    return run(parse_args(argv))


__all__ = ["Prepared", "main"]
