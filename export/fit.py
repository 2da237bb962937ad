"""The training recipe run on some mail: both halves, the combination, the thresholds.

`export train`, `export retrain` and `export cv` all come through here, so what
cross-validation and forward validation measure is what `export train` ships:

    halves = fit_halves(cfg, mcfg, analyses, labels)     # wide LinearSVC + GRU, each alone
    model = fit_model(cfg, mcfg, analyses, labels)       # + k-fold out-of-fold logits, the
                                                         #   combination and the thresholds

The halves (export/recipe.py) are trained alone. The combination and the thresholds are
fitted on out-of-fold logits, mail the halves that scored it never saw.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from export import metrics, recipe
from export.config import TrainConfig
from export.model import ModelConfig, SpamNet
from filterd.pipeline.text import Analysis, Prepared
from filterd.pipeline.vocab import Vocab


@dataclass
class Halves:
    """Both halves trained on some mail, and the inputs they were trained with."""

    vocab: Vocab
    idf: np.ndarray
    w: np.ndarray           # (BUCKETS,) LinearSVC weights of the wide half
    b: float                # its intercept
    net: SpamNet            # the GRU (its wide parameters unused until fold_in)
    mcfg: ModelConfig
    epochs: int

    def encode(self, analyses: list[Analysis], cfg: TrainConfig) -> list[Prepared]:
        return recipe.encode(analyses, self.vocab, self.idf, cfg.features)

    def logits(self, analyses: list[Analysis], cfg: TrainConfig) -> np.ndarray:
        """(n, 2) logits [wide, rnn] of these messages."""
        items = self.encode(analyses, cfg)
        return np.stack([recipe.wide_logits(self.w, self.b, items),
                         recipe.rnn_logits(self.net, items)], axis=1)


@dataclass
class Model:
    """The recipe's result: halves on all the mail given, and what out-of-fold logits chose."""

    halves: Halves
    combination: recipe.Combination
    thresholds: dict[str, float]
    oof: np.ndarray          # (n, 2) out-of-fold [wide, rnn] logits
    fold: np.ndarray         # each message's fold

    def scores(self, analyses: list[Analysis], cfg: TrainConfig) -> np.ndarray:
        """(n, 3) logits [whole, rnn, wide] of the finished model."""
        lg = self.halves.logits(analyses, cfg)
        return np.stack([self.combination.apply(lg[:, 0], lg[:, 1]), lg[:, 1], lg[:, 0]], axis=1)


def fit_halves(cfg: TrainConfig, mcfg: ModelConfig, analyses: list[Analysis],
               labels: np.ndarray) -> Halves:
    vocab, idf = recipe.fit_inputs(analyses, cfg.vocab_size, cfg.min_count, cfg.features,
                                   cfg.wide_min_df)
    items = recipe.encode(analyses, vocab, idf, cfg.features)
    w, b = recipe.fit_wide_svm(items, labels, cfg.wide_c, cfg.wide_ham_weight)
    mcfg = dataclasses.replace(mcfg, vocab_size=len(vocab))
    net = recipe.new_net(mcfg, cfg.seed)
    snaps = recipe.fit_rnn(net, items, labels, epochs=1 if cfg.dry_run else cfg.epochs,
                           lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                           seed=cfg.seed, max_batches=1 if cfg.dry_run else 0,
                           smoothing=cfg.smoothing, token_dropout=cfg.token_dropout,
                           short_views=cfg.short_views)
    net.load_state_dict(recipe.average_states(snaps[-cfg.average:]), strict=False)
    return Halves(vocab, idf, w, b, net, mcfg, len(snaps))


def cross_validate(cfg: TrainConfig, mcfg: ModelConfig, analyses: list[Analysis],
                   labels: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """(n, 2) out-of-fold logits [wide, rnn] of every message."""
    oof = np.zeros((len(labels), 2))
    for f in range(cfg.folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        started = time.monotonic()
        halves = fit_halves(cfg, mcfg, [analyses[i] for i in tr], labels[tr])
        oof[te] = halves.logits([analyses[i] for i in te], cfg)
        print(f"fold {f + 1}/{cfg.folds}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return oof


def folds_of(raws: list[bytes], folds: int) -> np.ndarray:
    return np.array([recipe.fold_of(r, folds) for r in raws], dtype=np.int64)


def fit_model(cfg: TrainConfig, mcfg: ModelConfig, analyses: list[Analysis], labels: np.ndarray,
              fold: np.ndarray) -> Model:
    """Cross-validate, fit the combination and thresholds on the out-of-fold logits, then
    train both halves on all of `analyses`."""
    oof = cross_validate(cfg, mcfg, analyses, labels, fold)
    comb, thresholds = finish(oof, labels, cfg)
    return Model(fit_halves(cfg, mcfg, analyses, labels), comb, thresholds, oof, fold)


def finish(oof: np.ndarray, labels: np.ndarray,
           cfg: TrainConfig) -> tuple[recipe.Combination, dict[str, float]]:
    """The combination and the thresholds, from out-of-fold [wide, rnn] logits."""
    comb = recipe.fit_combination(oof[:, 0], oof[:, 1], labels, cfg.combine_c, cfg.rnn_share)
    return comb, calibrate(labels, comb.apply(oof[:, 0], oof[:, 1]), cfg)


def calibrate(labels: np.ndarray, whole_logits: np.ndarray, cfg: TrainConfig) -> dict[str, float]:
    """tag and reject from the out-of-fold scores, each no lower than its floor.

    Out-of-fold scores come from mail of the same period as the training mail; newer mail
    scores higher (docs/model.md, forward validation), so a threshold read off them alone
    flags far more new ham than it did old. The floors (`tag_floor`, `reject_floor`, as
    probabilities) are the margin that forward validation showed is needed.
    """
    found = metrics.calibrate(labels, metrics.sigmoid(whole_logits))
    tag = max(found["tag"], cfg.tag_floor)
    if found["reject"] <= found["tag"]:
        # too little ham to tell 0.5 % from 0.1 % of it: the floors add a margin, they do
        # not make up the difference the data cannot show (retrain keeps such a model out)
        return {"tag": tag, "reject": tag}
    return {"tag": tag, "reject": max(found["reject"], cfg.reject_floor, tag)}


def fold_in(halves: Halves, comb: recipe.Combination) -> SpamNet:
    """The shipped network: wide weights scaled by a_wide (so wide.npy holds exactly what
    enters the whole logit), the combination's bias in the wide bias, a_rnn on the GRU."""
    net = halves.net.cpu().eval()
    with torch.no_grad():
        net.wide.copy_(torch.from_numpy(halves.w * np.float32(comb.a_wide)))
        net.wide_bias.fill_(comb.a_wide * halves.b + comb.bias)
        net.rnn_weight.fill_(comb.a_rnn)
    return net
