"""`python -m export cv --corpus PATH`: 5-fold cross-validation of the training recipe's designs.

Folds are a hash of each message (recipe.fold_of: duplicates together, every message in
exactly one fold). Per fold, vocabulary and IDF come from the fold's training part; the
wide half (LinearSVC, and Adam for comparison) and the GRU are trained alone, and every
message gets an out-of-fold logit from each design: the GRU after each epoch and averaged
over its last epochs. The whole is a combination learned on out-of-fold logits of the
*other* folds (nested, so the figure is honest), beside the fixed sum for comparison.

Prints, per design, mean / min / max over folds of AUC and spam recall at <= 0.2 % ham
flagged; --json writes them, --oof saves the out-of-fold logits (npz).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from export import metrics, recipe
from export.corpus import ReadStats, iter_corpus
from export.model import ModelConfig
from filterd.pipeline import text


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export cv", description=__doc__)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5, help="GRU epochs (each one is scored)")
    p.add_argument("--average", type=int, default=3, help="GRU epochs averaged (also scored)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--wide-c", type=float, nargs="+", default=[1.0], help="LinearSVC C (a grid)")
    p.add_argument("--ham-weight", type=float, nargs="+", default=[1.0],
                   help="LinearSVC class weight of ham (a grid, crossed with --wide-c)")
    p.add_argument("--adam", action="store_true", help="also fit the wide half by Adam")
    p.add_argument("--combine-c", type=float, nargs="+", default=[1.0],
                   help="C of the combination's logistic regression (a grid)")
    p.add_argument("--rnn-from", type=Path,
                   help="reuse the GRU's out-of-fold logits from this --oof file, no GRU training")
    p.add_argument("--rnn", nargs="*", default=None,
                   help="GRU designs to combine (default: all); e.g. rnn.avg4-6")
    p.add_argument("--max-messages", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--oof", type=Path, help="save out-of-fold logits here (npz)")
    return p.parse_args(argv)


def fold_logits(args: argparse.Namespace, analyses: list, labels: np.ndarray, fold: np.ndarray,
                f: int, oof: dict[str, np.ndarray]) -> None:
    """Train every design on the folds other than f; fill oof[design][fold == f]."""
    tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
    vocab, idf = recipe.fit_inputs([analyses[i] for i in tr], 30000, 2, "char_wb")
    items = recipe.encode(analyses, vocab, idf, "char_wb")
    train_items, test_items = [items[i] for i in tr], [items[i] for i in te]

    def put(name: str, values: np.ndarray) -> None:
        oof.setdefault(name, np.full(len(labels), np.nan))[te] = values

    started = time.monotonic()
    for c in args.wide_c:
        for hw in args.ham_weight:
            w, b = recipe.fit_wide_svm(train_items, labels[tr], c, hw)
            put(wide_name(c, hw), recipe.wide_logits(w, b, test_items))
    if args.adam:
        w, b = recipe.fit_wide_adam(train_items, labels[tr], 4, 0.03, 32, args.seed)
        put("wide.adam", recipe.wide_logits(w, b, test_items))
    print(f"fold {f}: wide {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.rnn_from:
        return
    net = recipe.new_net(ModelConfig(vocab_size=len(vocab), dropout=args.dropout), args.seed)
    snaps = recipe.fit_rnn(net, train_items, labels[tr], epochs=args.epochs, lr=args.lr,
                           weight_decay=args.weight_decay, batch_size=32, seed=args.seed,
                           on_epoch=lambda e, n: put(f"rnn.e{e}", recipe.rnn_logits(n, test_items)))
    for end in range(2, args.epochs + 1):
        for k in range(2, min(args.average, end) + 1):
            net.load_state_dict(recipe.average_states(snaps[end - k:end]), strict=False)
            put(f"rnn.avg{end - k + 1}-{end}", recipe.rnn_logits(net, test_items))


def wide_name(c: float, ham_weight: float) -> str:
    name = f"wide.svm.C{c:g}"
    return name if ham_weight == 1.0 else f"{name}.ham{ham_weight:g}"


def load_rnn(path: Path, labels: np.ndarray, fold: np.ndarray,
             keys: list[str] | None) -> dict[str, np.ndarray]:
    """Saved out-of-fold GRU logits, checked to belong to the same messages and folds."""
    saved = np.load(path)
    if not (np.array_equal(saved["labels"], labels) and np.array_equal(saved["fold"], fold)):
        raise SystemExit(f"cv: {path} was made on other messages or folds")
    names = keys if keys is not None else [k for k in saved.files if k.startswith("rnn.")]
    return {k: saved[k] for k in names}


def per_fold(labels: np.ndarray, fold: np.ndarray, scores: np.ndarray, folds: int) -> dict:
    rows = [metrics.summary(labels[fold == f], scores[fold == f]) for f in range(folds)]
    out = {}
    for key in ("auc", "recall_at_0.2pct_fpr"):
        values = np.array([r[key] for r in rows])
        out[key] = {"mean": float(values.mean()), "min": float(values.min()),
                    "max": float(values.max()), "folds": values.round(6).tolist()}
    return out


def nested_combination(wide: np.ndarray, rnn: np.ndarray, labels: np.ndarray,
                       fold: np.ndarray, folds: int, c: float) -> tuple[np.ndarray, list]:
    """Each fold's whole logit from a combination fitted on the other folds' logits."""
    out, weights = np.zeros(len(labels)), []
    for f in range(folds):
        comb = recipe.fit_combination(wide[fold != f], rnn[fold != f], labels[fold != f], c)
        out[fold == f] = comb.apply(wide[fold == f], rnn[fold == f])
        weights.append([round(x, 4) for x in comb])
    return out, weights


def table(labels: np.ndarray, fold: np.ndarray, oof: dict[str, np.ndarray], folds: int,
          cs: list[float], rnn_keys: list[str] | None) -> dict:
    out = {name: per_fold(labels, fold, v, folds) for name, v in oof.items()}
    rnames = rnn_keys if rnn_keys is not None else [n for n in oof if n.startswith("rnn.")]
    for wname in [n for n in oof if n.startswith("wide.")]:
        for rname in rnames:
            for c in cs:
                whole, weights = nested_combination(oof[wname], oof[rname], labels, fold,
                                                    folds, c)
                name = f"whole[{wname}+{rname}]" + ("" if c == 1.0 else f".cC{c:g}")
                out[name] = per_fold(labels, fold, whole, folds)
                out[name]["weights"] = weights
            out[f"sum[{wname}+{rname}]"] = per_fold(labels, fold, oof[wname] + oof[rname], folds)
    return out


def show(results: dict) -> None:
    print(f"{'design':56s} {'AUC mean':>9s} {'min':>8s} {'max':>8s}   "
          f"{'recall mean':>11s} {'min':>6s} {'max':>6s}")
    for name, r in results.items():
        a, rc = r["auc"], r["recall_at_0.2pct_fpr"]
        print(f"{name:56s} {a['mean']:9.5f} {a['min']:8.5f} {a['max']:8.5f}   "
              f"{100 * rc['mean']:10.1f}% {100 * rc['min']:5.1f}% {100 * rc['max']:5.1f}%")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    samples = list(iter_corpus(args.corpus, ReadStats()))
    if args.max_messages:
        keep = np.random.default_rng(1).permutation(len(samples))[: args.max_messages]
        samples = [samples[i] for i in sorted(keep)]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    fold = np.array([recipe.fold_of(s.raw, args.folds) for s in samples])
    analyses = [text.analyze(s.raw, args.max_tokens) for s in samples]
    print(f"{len(samples)} messages, fold sizes {np.bincount(fold).tolist()}", file=sys.stderr)
    oof: dict[str, np.ndarray] = {}
    if args.rnn_from:
        oof.update(load_rnn(args.rnn_from, labels, fold, args.rnn))
    for f in range(args.folds):
        fold_logits(args, analyses, labels, fold, f, oof)
        if args.oof:
            # numpy's stubs take **kwds for allow_pickle: bool; the arrays are what savez stores.
            np.savez(args.oof, labels=labels, fold=fold, **oof)  # type: ignore[arg-type]
    results = table(labels, fold, oof, args.folds, args.combine_c, args.rnn)
    show(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
