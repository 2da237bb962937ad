"""Two validations of the recipe: shuffled (k-fold) and forward in time.

Shuffled cross-validation scores every message with halves trained on the other folds:
mail of the same period as the training mail, which on this corpus is nearly separable,
so it cannot tell designs apart that differ on newer mail. Forward validation trains the
whole recipe (its own cross-validation, combination and thresholds included) on older
mail and scores newer mail, which is what every installed model meets:

- `folders`: the SpamAssassin corpus's 2002 folders (easy_ham, spam) train, its later
  ones (easy_ham_2, hard_ham, spam_2) are scored;
- `date`: any mail, by its Date header: the oldest `1 - forward_frac` trains, the newest
  `forward_frac` is scored (undated mail counts as oldest).

Both report AUC and spam recall at <= 0.2 % ham flagged for the whole and each half;
forward adds the share of new ham and spam the model flags at its *own* tag threshold,
and bogofilter (export/bogofilter.py) trained and scored on the same split.
"""

from __future__ import annotations

import email.utils
import re
import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from export import bogofilter, fit, metrics, recipe
from export.config import TrainConfig
from export.corpus import Sample
from export.model import ModelConfig
from filterd.pipeline.text import Analysis

OLD_FOLDERS = ("easy_ham", "spam")
NEW_FOLDERS = ("easy_ham_2", "hard_ham", "spam_2")
SPLITS = ("folders", "date")
_DATE = re.compile(rb"^Date:[ \t]*(.*?)\r?$", re.M | re.I)


def folder_of(source: str) -> str:
    """"20030228_easy_ham_2.tar.bz2:easy_ham_2/0001.x" -> "easy_ham_2" (the member's folder)."""
    member = source.rsplit(":", 1)[-1]
    parts = member.replace("\\", "/").split("/")
    return parts[-2] if len(parts) > 1 else ""


def date_of(raw: bytes) -> float:
    """The Date header as a POSIX time, or 0.0 where there is none or it does not parse."""
    head = raw[:65536].split(b"\n\n", 1)[0]
    match = _DATE.search(head)
    if match is None:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(match.group(1).decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0


def forward_split(samples: Sequence[Sample], how: str,
                  frac: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(older, newer) indices, or None when this mail has no such split with both classes."""
    labels = np.array([s.label for s in samples])
    if how == "folders":
        folders = [folder_of(s.source) for s in samples]
        old = np.flatnonzero([f in OLD_FOLDERS for f in folders])
        new = np.flatnonzero([f in NEW_FOLDERS for f in folders])
    elif how == "date":
        order = np.argsort([date_of(s.raw) for s in samples], kind="stable")
        cut = int(round(len(samples) * (1 - frac)))
        old, new = np.sort(order[:cut]), np.sort(order[cut:])
    else:
        raise ValueError(f"unknown forward split {how!r}; known: {', '.join(SPLITS)}")
    if set(labels[old].tolist()) != {0, 1} or set(labels[new].tolist()) != {0, 1}:
        return None
    return old, new


def cv_figures(oof: np.ndarray, labels: np.ndarray, fold: np.ndarray, cfg: TrainConfig) -> dict:
    """Per-fold figures (mean, min, max) of each half and of the whole; the whole of each
    fold uses a combination fitted on the other folds, so it is out-of-fold too."""
    whole = np.zeros(len(labels))
    for f in range(cfg.folds):
        rest = fold != f
        comb = recipe.fit_combination(oof[rest, 0], oof[rest, 1], labels[rest], cfg.combine_c,
                                      cfg.rnn_share)
        whole[fold == f] = comb.apply(oof[fold == f, 0], oof[fold == f, 1])
    out: dict = {"folds": cfg.folds, "rule": "sha256('filterd-cv\\0' + message) mod folds"}
    for name, scores in (("whole", whole), ("rnn", oof[:, 1]), ("wide", oof[:, 0])):
        rows = [metrics.summary(labels[fold == f], scores[fold == f]) for f in range(cfg.folds)]
        out[name] = {key: {"mean": float(np.mean(v)), "min": float(np.min(v)),
                           "max": float(np.max(v))}
                     for key in ("auc", "recall_at_0.2pct_fpr")
                     for v in [[r[key] for r in rows]]}
    return out


class ForwardRun(NamedTuple):
    """What training on the older mail gave: enough to finish any combination cheaply."""

    how: str
    old: np.ndarray          # indices of the older mail (trained on)
    new: np.ndarray          # indices of the newer mail (scored)
    labels: np.ndarray       # of the newer mail
    oof: np.ndarray          # (n_old, 2) out-of-fold logits of the older mail
    old_labels: np.ndarray
    logits: np.ndarray       # (n_new, 2) [wide, rnn] of the newer mail, halves trained on all older


def forward_run(cfg: TrainConfig, mcfg: ModelConfig, samples: Sequence[Sample],
                analyses: list[Analysis], how: str) -> ForwardRun | None:
    """The recipe (its own cross-validation included) trained on the older mail, scoring
    the newer; None when this mail has no such split."""
    split = forward_split(samples, how, cfg.forward_frac)
    if split is None:
        return None
    old, new = split
    labels = np.array([s.label for s in samples], dtype=np.int64)
    print(f"forward ({how}): training on {len(old)} older messages, scoring {len(new)} newer",
          file=sys.stderr)
    model = fit.fit_model(cfg, mcfg, [analyses[i] for i in old], labels[old],
                          fit.folds_of([samples[i].raw for i in old], cfg.folds))
    return ForwardRun(how, old, new, labels[new], model.oof, labels[old],
                      model.halves.logits([analyses[i] for i in new], cfg))


def forward_figures(run: ForwardRun, cfg: TrainConfig,
                    reference: np.ndarray | None = None) -> dict:
    """Figures of the newer mail under the recipe's own combination and thresholds."""
    comb, thresholds = fit.finish(run.oof, run.old_labels, cfg)
    y = run.labels
    whole = comb.apply(run.logits[:, 0], run.logits[:, 1])
    out: dict = {"split": run.how, "train": {"ham": int((run.old_labels == 0).sum()),
                                             "spam": int(run.old_labels.sum())},
                 "thresholds": thresholds, "combination": comb._asdict()}
    for name, scores in (("whole", whole), ("rnn", run.logits[:, 1]), ("wide", run.logits[:, 0])):
        out[name] = with_spread(y, scores)
    probs = metrics.sigmoid(whole)
    out["whole"]["at_tag"] = metrics.at_threshold(y, probs, thresholds["tag"])
    out["whole"]["at_reject"] = metrics.at_threshold(y, probs, thresholds["reject"])
    if reference is not None:
        out["bogofilter"] = with_spread(y, reference)
        out["bogofilter"]["at_0.99"] = metrics.at_threshold(y, reference, 0.99)
    return out


def reference_scores(samples: Sequence[Sample], run: ForwardRun) -> np.ndarray | None:
    """bogofilter trained on the older mail of this run's split, its spamicity of the newer;
    None where bogofilter is not installed."""
    if not bogofilter.available():
        return None
    return bogofilter.train_and_score([samples[i].raw for i in run.old],
                                      [samples[i].label for i in run.old],
                                      [samples[i].raw for i in run.new])


def with_spread(labels: np.ndarray, scores: np.ndarray, rounds: int = 200) -> dict:
    """summary() plus a bootstrap 5-95 % interval of the AUC (resampled messages)."""
    out: dict = dict(metrics.summary(labels, scores))
    rng = np.random.default_rng(0)
    aucs = []
    for _ in range(rounds):
        pick = rng.integers(0, len(labels), len(labels))
        if 0 < labels[pick].sum() < len(pick):
            aucs.append(metrics.roc_auc(labels[pick], scores[pick]))
    out["auc_5_95"] = [float(np.percentile(aucs, 5)), float(np.percentile(aucs, 95))]
    return out
