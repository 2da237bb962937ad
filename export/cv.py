"""`python -m export cv`: compare designs of the training recipe, shuffled and forward in time.

Every design is the shipped recipe (export/config.py, the same `--set KEY=VALUE` as
`export train`) with some settings changed; `--grid KEY=V1,V2,...` tries each value
(several --grid: every combination). Each design is judged two ways (export/validate.py):

- shuffled: k-fold cross-validation over all the mail (mean, min and max over folds);
- forward: the recipe trained on the older mail, scored on the newer (`--forward folders`,
  the corpus's 2002 folders against its later ones, and/or `date`, by the Date header),
  with the share of newer ham flagged at the model's own tag threshold, a bootstrap 5-95 %
  interval of the AUC, and bogofilter trained and scored on the same split (Debian package
  `bogofilter`; the row is left out, with a note, where it is not installed).

Settings that only change the combination or the thresholds (rnn_share, combine_c,
tag_floor, reject_floor) reuse the halves trained for the first design that needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from export import bogofilter, fit, validate
from export.config import ModelConfig, TrainConfig, apply_overrides, split_overrides
from export.corpus import ReadStats, add_mail_arguments, check_mail_arguments, read_mail
from export.train import subsample
from filterd.pipeline import text

COMBINATION_ONLY = {"rnn_share", "combine_c", "tag_floor", "reject_floor"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export cv", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mail_arguments(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of every design (as in export train)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="try each value of a setting (repeatable: every combination)")
    p.add_argument("--validation", nargs="+", choices=["shuffled", "forward"],
                   default=["shuffled", "forward"])
    p.add_argument("--forward", nargs="+", choices=validate.SPLITS, default=["folders"],
                   help="forward splits (default: folders)")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    check_mail_arguments(p, args)
    return args


def designs(base: list[str], grid: list[str]) -> list[list[str]]:
    """The override lists of every design: base settings plus one value of each grid key."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid {item!r}: expected KEY=V1,V2,...")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [base + list(combo) for combo in itertools.product(*axes)] if axes else [base]


def configured(pairs: list[str]) -> tuple[TrainConfig, ModelConfig]:
    cfg, mcfg = TrainConfig(), ModelConfig()
    train_pairs, model_pairs = split_overrides(pairs)
    apply_overrides(cfg, train_pairs)
    apply_overrides(mcfg, model_pairs)
    return cfg, mcfg


def halves_key(cfg: TrainConfig, mcfg: ModelConfig) -> str:
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in COMBINATION_ONLY}
    return json.dumps([settings, dataclasses.asdict(mcfg)], sort_keys=True)


def run(args: argparse.Namespace) -> int:
    try:
        plans = [(pairs, *configured(pairs)) for pairs in designs(args.overrides, args.grid)]
    except ValueError as exc:
        print(f"cv: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(plans[0][1].threads)
    samples = subsample(read_mail(args, ReadStats()), plans[0][1].max_messages, plans[0][1].split_seed)
    if not samples:
        print("cv: no messages found", file=sys.stderr)
        return 1
    labels = np.array([s.label for s in samples], dtype=np.int64)
    analyses = [text.analyze(s.raw, plans[0][1].max_tokens) for s in samples]
    oofs: dict[str, np.ndarray] = {}                                  # by halves_key
    runs: dict[tuple[str, str], validate.ForwardRun | None] = {}      # by (halves_key, split)
    refs: dict[tuple[str, float], np.ndarray | None] = {}             # bogofilter, by split
    results: dict[str, dict] = {}
    for pairs, cfg, mcfg in plans:
        name = " ".join(pairs) or "shipped recipe"
        key = halves_key(cfg, mcfg)
        row: dict = {}
        if "shuffled" in args.validation:
            fold = fit.folds_of([s.raw for s in samples], cfg.folds)
            if key not in oofs:
                oofs[key] = fit.cross_validate(cfg, mcfg, analyses, labels, fold)
            row["shuffled"] = validate.cv_figures(oofs[key], labels, fold, cfg)
        for how in args.forward if "forward" in args.validation else []:
            if (key, how) not in runs:
                runs[key, how] = validate.forward_run(cfg, mcfg, samples, analyses, how)
            fwd = runs[key, how]
            if fwd is None:
                continue
            split = (how, cfg.forward_frac)     # the same split for every design: bogofilter once
            if split not in refs:
                refs[split] = validate.reference_scores(samples, fwd)
            row[f"forward.{how}"] = validate.forward_figures(fwd, cfg, refs[split])
        results[name] = row
        show_design(name, row)
    if refs and not bogofilter.available():
        print("(no bogofilter row: install Debian's bogofilter package)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def show_design(name: str, row: dict) -> None:
    print(f"\n{name}")
    if "shuffled" in row:
        cv = row["shuffled"]
        print(f"  shuffled, {cv['folds']}-fold   AUC mean  [min - max]            "
              f"recall at <= 0.2 % ham flagged, mean [min - max]")
        for part in ("whole", "rnn", "wide"):
            a, r = cv[part]["auc"], cv[part]["recall_at_0.2pct_fpr"]
            print(f"    {part:10s}        {a['mean']:.5f} [{a['min']:.5f} - {a['max']:.5f}]  "
                  f"{100 * r['mean']:5.1f} % [{100 * r['min']:5.1f} - {100 * r['max']:5.1f}]")
    for key in [k for k in row if k.startswith("forward.")]:
        fw = row[key]
        print(f"  forward ({fw['split']}), trained on {fw['train']['ham']} ham + "
              f"{fw['train']['spam']} spam: AUC [5-95 %], recall at <= 0.2 % ham flagged")
        for part in ("whole", "rnn", "wide", "bogofilter"):
            if part in fw:
                f = fw[part]
                print(f"    {part:10s}        {f['auc']:.5f} [{f['auc_5_95'][0]:.4f} - "
                      f"{f['auc_5_95'][1]:.4f}]  {100 * f['recall_at_0.2pct_fpr']:5.1f} %")
        tag = fw["whole"]["at_tag"]
        print(f"    at its own tag threshold {tag['threshold']:.3f}: {100 * tag['ham_fpr']:.1f} % "
              f"of {tag['fp'] + tag['tn']} ham flagged, {100 * tag['spam_recall']:.1f} % of spam")
        if "bogofilter" in fw:
            b = fw["bogofilter"]["at_0.99"]
            print(f"    bogofilter at 0.99: {100 * b['ham_fpr']:.1f} % of ham flagged, "
                  f"{100 * b['spam_recall']:.1f} % of spam")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
