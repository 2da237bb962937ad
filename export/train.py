"""`python -m export train`: corpus → split → vocabulary/IDF → training → calibration → artifact.

Reads top to bottom: the seed is set once, the resolved config is saved with the model,
early stopping keeps the epoch with the lowest validation loss, and the test split is only
scored at the end for the manifest (never used to choose anything).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from export import artifacts, metrics
from export.config import ModelConfig, TrainConfig, apply_overrides, split_overrides
from export.corpus import ReadStats, Sample, iter_corpus, iter_path, split_of
from export.dataset import Batch, batches
from export.model import SpamNet
from filterd.pipeline import features, text
from filterd.pipeline.text import Prepared
from filterd.pipeline.vocab import Vocab


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export train", description=__doc__)
    p.add_argument("--corpus", type=Path, help="tarballs or folders labelled by folder name")
    p.add_argument("--ham", type=Path, nargs="*", default=[], help="ham paths")
    p.add_argument("--spam", type=Path, nargs="*", default=[], help="spam paths")
    p.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig/ModelConfig field, e.g. --set epochs=2")
    p.add_argument("--dry-run", action="store_true", help="train one batch (smoke test)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    if args.corpus is None and not (args.ham and args.spam):
        p.error("give --corpus, or both --ham and --spam")
    return args


def load_samples(args: argparse.Namespace, stats: ReadStats) -> list[Sample]:
    samples: list[Sample] = []
    if args.corpus is not None:
        samples += iter_corpus(args.corpus, stats)
    for path in args.ham:
        samples += iter_path(path, 0, stats)
    for path in args.spam:
        samples += iter_path(path, 1, stats)
    return samples


def subsample(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    """At most `limit` messages, keeping the ham/spam ratio (for smoke tests)."""
    if limit <= 0 or limit >= len(samples):
        return samples
    order = np.random.default_rng(seed).permutation(len(samples))
    return [samples[i] for i in sorted(order[:limit])]


def build_inputs(train: list[Sample], cfg: TrainConfig) -> tuple[Vocab, np.ndarray]:
    """Vocabulary and IDF from the training split only."""
    analyses = [text.analyze(s.raw, cfg.max_tokens) for s in tqdm(train, desc="analyse")]
    vocab = Vocab.build((a.tokens for a in analyses), cfg.vocab_size, cfg.min_count)
    df = features.document_frequency([a.wide for a in analyses], cfg.features)
    return vocab, features.fit_idf(df, len(analyses))


def loss_fn(out: tuple[torch.Tensor, ...], labels: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Loss of the sum plus each branch's own loss, so neither branch starves the other.

    Ham errors weigh ham_weight times more: a flagged ham costs more than a missed spam.
    Label smoothing moves the targets to eps/2 and 1 - eps/2; the wide branch's own loss has
    its own eps (smoothing cost the linear branch alone most of its low-FPR recall). With
    wide_drop, that fraction of the batch sees the sum without the wide logit, so the GRU
    keeps learning from the messages the wide branch already gets right.
    """
    _, logit_rnn, logit_wide = out
    weight = 1.0 + (cfg.ham_weight - 1.0) * (1.0 - labels)

    def bce(x: torch.Tensor, eps: float) -> torch.Tensor:
        targets = labels * (1.0 - eps) + eps / 2
        return F.binary_cross_entropy_with_logits(x, targets, weight=weight)

    keep = (torch.rand(labels.shape, device=labels.device) >= cfg.wide_drop).float()
    logit = logit_rnn + keep * logit_wide if cfg.wide_drop > 0 else out[0]
    eps = cfg.label_smoothing
    return bce(logit, eps) + cfg.aux_weight * (bce(logit_rnn, eps)
                                               + bce(logit_wide, cfg.wide_label_smoothing))


@torch.no_grad()
def predict(net: SpamNet, data: list[Batch], device: torch.device) -> np.ndarray:
    """(n, 3) logits: whole, recurrent part, wide part."""
    net.eval()
    outs = [torch.stack(net(*(t.to(device) for t in b[:4])), dim=1).cpu() for b in data]
    return torch.cat(outs).double().numpy()


def fit(cfg: TrainConfig, net: SpamNet, train: list[Batch], val: list[Batch],
        val_labels: np.ndarray, device: torch.device) -> tuple[SpamNet, list[dict]]:
    deep = [p for n, p in net.named_parameters() if not n.startswith("wide")]
    wide = [p for n, p in net.named_parameters() if n.startswith("wide")]
    groups, max_lr = [{"params": deep, "lr": cfg.lr}], [cfg.lr]
    if cfg.wide_first > 0:
        fit_wide(cfg, net, train, device)       # then frozen: the GRU learns beside it
        for p in wide:
            p.requires_grad_(False)
    else:
        groups.append({"params": wide, "lr": cfg.wide_lr})
        max_lr.append(cfg.wide_lr)
    opt = torch.optim.Adam(groups)
    steps = 1 if cfg.dry_run else cfg.epochs * len(train)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr,
                                                total_steps=max(steps, 2), pct_start=0.2)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict] = []
    # Each branch keeps the weights of its own best validation epoch: the wide branch
    # peaks in an epoch or two and then only memorises, the GRU keeps improving.
    best = {"deep": (float("inf"), _branch(net, deep=True)),
            "wide": (float("inf"), _branch(net, deep=False))}
    stale = 0
    snapshots: list[dict[str, torch.Tensor]] = []   # deep weights after each epoch
    for epoch in range(1 if cfg.dry_run else cfg.epochs):
        net.train()
        order = rng.permutation(len(train))[: 1 if cfg.dry_run else None]
        started = time.monotonic()
        for i in tqdm(order, desc=f"epoch {epoch + 1}", leave=False, file=sys.stderr):
            b = train[i]
            loss = loss_fn(net(*(t.to(device) for t in b[:4])), b.labels.to(device), cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(deep, 1.0)
            opt.step()
            sched.step()
        record = _validate(net, val, val_labels, device)
        record.update(epoch=epoch + 1, seconds=round(time.monotonic() - started, 1))
        history.append(record)
        print(f"epoch {epoch + 1}: {record}", file=sys.stderr)
        if record["val_loss_wide"] < best["wide"][0]:
            best["wide"] = (record["val_loss_wide"], _branch(net, deep=False))
        snapshots.append(_branch(net, deep=True))
        if record["val_loss_rnn"] < best["deep"][0]:
            best["deep"], stale = (record["val_loss_rnn"], _average(snapshots[-cfg.average:])), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    net.load_state_dict({**best["deep"][1], **best["wide"][1]})
    return net, history


def fit_wide(cfg: TrainConfig, net: SpamNet, train: list[Batch], device: torch.device) -> None:
    """Train the wide branch alone first: wide_runs passes over the batches in different
    orders, wide_first epochs each, Adam at a constant wide_lr from zero weights, averaged.

    A linear model's average is the average of its logits, so this is a small ensemble at
    no cost to scoring; each order alone varies by several points of low-FPR recall.
    """
    weights = []
    for run in range(cfg.wide_runs):
        w = torch.zeros_like(net.wide, device=device, requires_grad=True)
        b = torch.zeros_like(net.wide_bias, device=device, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=cfg.wide_lr)
        rng = np.random.default_rng([cfg.seed, run])
        for _ in range(1 if cfg.dry_run else cfg.wide_first):
            for i in rng.permutation(len(train))[: 1 if cfg.dry_run else None]:
                bt = train[i]
                feat_ids, feat_w, y = (t.to(device) for t in (bt.feat_ids, bt.feat_w, bt.labels))
                eps = cfg.wide_label_smoothing
                loss = F.binary_cross_entropy_with_logits(
                    (w[feat_ids] * feat_w).sum(dim=1) + b, y * (1.0 - eps) + eps / 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        weights.append((w.detach(), b.detach()))
    with torch.no_grad():
        net.wide.copy_(torch.stack([w for w, _ in weights]).mean(dim=0))
        net.wide_bias.copy_(torch.stack([b for _, b in weights]).mean(dim=0))


def _branch(net: SpamNet, deep: bool) -> dict[str, torch.Tensor]:
    """A copy of one branch's weights (the wide ones start with "wide")."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()
            if k.startswith("wide") != deep}


def _average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Checkpoint averaging: the mean of the deep weights of the last few epochs."""
    return {k: torch.stack([st[k] for st in states]).mean(dim=0) for k in states[0]}


def _validate(net: SpamNet, val: list[Batch], labels: np.ndarray,
              device: torch.device) -> dict[str, float]:
    logits = torch.from_numpy(predict(net, val, device))
    y = torch.from_numpy(labels).double()
    out = {}
    for col, name in enumerate(("whole", "rnn", "wide")):
        out[f"val_loss_{name}"] = float(F.binary_cross_entropy_with_logits(logits[:, col], y))
        out[f"val_auc_{name}"] = metrics.roc_auc(labels, logits[:, col].numpy())
    return out


def run(args: argparse.Namespace) -> int:
    cfg, mcfg = TrainConfig(), ModelConfig()
    train_pairs, model_pairs = split_overrides(args.overrides)
    try:
        apply_overrides(cfg, train_pairs)
        apply_overrides(mcfg, model_pairs)
    except ValueError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    cfg.dry_run = cfg.dry_run or args.dry_run
    torch.manual_seed(cfg.seed)
    # Same seed and data, same weights (bit for bit on CPU; on CUDA where cuDNN allows).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(cfg.threads)
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    started = time.monotonic()
    stats = ReadStats()
    samples = subsample(load_samples(args, stats), cfg.max_messages, cfg.split_seed)
    print(f"read {len(samples)} messages, malformed skipped: {stats.malformed or 'none'}",
          file=sys.stderr)
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for s in samples:
        parts[split_of(s.raw, cfg.split_seed, cfg.val_frac, cfg.test_frac)].append(s)
    for name, part in parts.items():
        if {s.label for s in part} != {0, 1}:
            print(f"train: the {name} split holds no ham or no spam ({len(part)} messages): "
                  "give more mail of both kinds", file=sys.stderr)
            return 1
    vocab, idf = build_inputs(parts["train"], cfg)
    mcfg.vocab_size = len(vocab)
    prepared = {k: [text.prepare(s.raw, vocab, idf, cfg.max_tokens, cfg.features) for s in v]
                for k, v in parts.items()}
    labels = {k: np.array([s.label for s in v], dtype=np.int64) for k, v in parts.items()}
    data = {k: batches(prepared[k], labels[k].tolist(), cfg.batch_size) for k in parts}
    net = SpamNet(mcfg).to(device)
    net, history = fit(cfg, net, data["train"], data["val"], labels["val"], device)
    net = net.cpu().eval()
    logits = {k: predict(net, data[k], torch.device("cpu")) for k in ("val", "test") if parts[k]}
    report = evaluate_parts(logits, labels)
    thresholds = metrics.calibrate(labels["val"], metrics.sigmoid(logits["val"][:, 0]))
    print(f"metrics: {report}\nthresholds: {thresholds}", file=sys.stderr)
    artifacts.write(args.out, net, vocab, idf, cfg=cfg, mcfg=mcfg, parts=parts, stats=stats,
                    metrics=report, thresholds=thresholds, history=history,
                    parity_items=prepared["val"][:256], parity_logits=logits["val"][:256, 0],
                    seconds=time.monotonic() - started, argv=sys.argv)
    return 0


def evaluate_parts(logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """Validation and test figures of the whole network and of each branch alone."""
    out = {}
    for split, values in logits.items():
        # On logits: probabilities round to 1.0 past a logit of about 37 and would tie.
        out[split] = {name: metrics.summary(labels[split], values[:, col])
                      for col, name in enumerate(("whole", "rnn", "wide"))}
    return out


def main(argv: list[str]) -> int:
    return run(parse_args(argv))


__all__ = ["Prepared", "main"]
