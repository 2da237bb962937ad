"""The pieces of the training recipe (export/fit.py runs them; docs/model.md says why).

Each half is trained alone, for itself:

1. the wide half: scikit-learn's LinearSVC on filterd's hashed n-gram features (the same
   vector the network's wide layer multiplies), its weights loaded into `SpamNet.wide`;
2. the GRU alone on its own loss (BCE, Adam at a constant rate), the mean of the weights
   of its last few epochs (checkpoint averaging);
3. the combination of the two logits, fitted on out-of-fold logits:
   logit = a_wide * wide + a_rnn * rnn + bias (fit_combination).

Folds are a hash of each message's bytes (duplicates always fall in one fold); the
vocabulary and IDF of a fold come from its training part only.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from export.dataset import Batch, batches
from export.model import ModelConfig, SpamNet
from filterd.pipeline import features
from filterd.pipeline.text import Analysis, Prepared
from filterd.pipeline.vocab import UNK_ID, Vocab


def fold_of(raw: bytes, folds: int) -> int:
    """Cross-validation fold of a message: a hash of its bytes, so duplicates share one."""
    digest = hashlib.sha256(b"filterd-cv\0" + raw).digest()
    return int.from_bytes(digest[:8], "little") % folds


class Combination(NamedTuple):
    a_wide: float
    a_rnn: float
    bias: float

    def apply(self, wide: np.ndarray, rnn: np.ndarray) -> np.ndarray:
        return self.a_wide * np.asarray(wide) + self.a_rnn * np.asarray(rnn) + self.bias


def fit_inputs(analyses: Sequence[Analysis], vocab_size: int, min_count: int,
               scheme: str, min_df: int = 1) -> tuple[Vocab, np.ndarray]:
    """Vocabulary and IDF from these (training) messages only.

    Buckets seen in fewer than `min_df` messages get IDF 0, so they never carry weight:
    an n-gram that only a handful of training messages have (a campaign's tracking code, a
    list's footer) is what a model learns by heart and what newer mail does not repeat.
    """
    vocab = Vocab.build((a.tokens for a in analyses), vocab_size, min_count)
    df = features.document_frequency([a.wide for a in analyses], scheme)
    idf = features.fit_idf(df, len(analyses))
    if min_df > 1:
        idf[df < min_df] = 0.0
    return vocab, idf


def encode(analyses: Sequence[Analysis], vocab: Vocab, idf: np.ndarray,
           scheme: str) -> list[Prepared]:
    """What text.prepare does, from analyses computed once for all folds."""
    out = []
    for a in analyses:
        feat_ids, feat_w = features.featurize(a.wide, idf, scheme)
        out.append(Prepared(vocab.encode(a.tokens or ["<body>"]), feat_ids, feat_w))
    return out


def sparse_matrix(items: Sequence[Prepared]):  # -> scipy.sparse.csr_matrix
    from scipy import sparse

    indptr = np.cumsum([0] + [len(p.feat_ids) for p in items])
    ids = np.concatenate([p.feat_ids for p in items])
    w = np.concatenate([p.feat_w for p in items]).astype(np.float64)
    return sparse.csr_matrix((w, ids, indptr), shape=(len(items), features.BUCKETS))


def fit_wide_svm(items: Sequence[Prepared], labels: np.ndarray, c: float,
                 ham_weight: float = 1.0) -> tuple[np.ndarray, float]:
    """LinearSVC (squared hinge, L2) on the hashed features: (weights (BUCKETS,), bias).

    ham_weight > 1 makes a margin violation by a ham message cost that many times more
    (a flagged ham costs a postmaster more than a missed spam).
    """
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=c, max_iter=5000, tol=1e-5, random_state=0,
                    class_weight={0: ham_weight, 1: 1.0})
    svm.fit(sparse_matrix(items), labels)
    return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])


def fit_wide_adam(items: Sequence[Prepared], labels: np.ndarray, epochs: int, lr: float,
                  batch_size: int, seed: int) -> tuple[np.ndarray, float]:
    """The wide layer alone by Adam at a constant lr from zero, BCE without smoothing."""
    w = torch.zeros(features.BUCKETS, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    data = batches(items, labels.tolist(), batch_size)
    rng = np.random.default_rng([seed, 7])
    for _ in range(epochs):
        for i in rng.permutation(len(data)):
            bt = data[i]
            loss = F.binary_cross_entropy_with_logits((w[bt.feat_ids] * bt.feat_w).sum(1) + b,
                                                      bt.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return w.detach().numpy().copy(), float(b.detach()[0])


def wide_logits(w: np.ndarray, b: float, items: Sequence[Prepared]) -> np.ndarray:
    return np.array([float(np.dot(w[p.feat_ids], p.feat_w)) for p in items]) + b


def deep_state(net: SpamNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if not k.startswith("wide")}


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Checkpoint averaging: the mean of the GRU's weights over several epochs."""
    return {k: torch.stack([st[k] for st in states]).mean(dim=0) for k in states[0]}


def fit_rnn(net: SpamNet, items: Sequence[Prepared], labels: np.ndarray, *, epochs: int,
            lr: float, weight_decay: float, batch_size: int, seed: int,
            on_epoch: Callable[[int, SpamNet], None] | None = None,
            max_batches: int = 0, smoothing: float = 0.0, token_dropout: float = 0.0,
            short_views: float = 0.0) -> list[dict[str, torch.Tensor]]:
    """Train the deep half alone on its own loss; the wide parameters are not touched.

    Returns the deep weights after each epoch (for checkpoint averaging). `smoothing` pulls
    the targets toward 0.5 (label smoothing) and `token_dropout` turns that fraction of the
    input tokens into <unk> at each step: both keep the GRU from growing certain of words
    that only the training period had. `short_views` is the share of messages that a step
    shows cut to their first 8-48 tokens: the corpus has few short messages, and a GRU that
    never saw a short ham takes any short note for spam.
    """
    deep = [p for n, p in net.named_parameters() if not n.startswith("wide")]
    for p in (net.wide, net.wide_bias):
        p.requires_grad_(False)
    opt = torch.optim.AdamW(deep, lr=lr, weight_decay=weight_decay)
    data = batches(items, labels.tolist(), batch_size)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    snapshots = []
    for epoch in range(epochs):
        net.train()
        started = time.monotonic()
        order = rng.permutation(len(data))[: max_batches or None]
        for i in tqdm(order, desc=f"gru epoch {epoch + 1}", leave=False, file=sys.stderr):
            b = data[i]
            ids = b.ids
            if token_dropout > 0:
                drop = (torch.rand(ids.shape, generator=gen) < token_dropout) & (ids > UNK_ID)
                ids = ids.masked_fill(drop, UNK_ID)
            lengths = b.lengths
            if short_views > 0:
                cut = torch.randint(8, 49, lengths.shape, generator=gen)
                pick = torch.rand(lengths.shape, generator=gen) < short_views
                lengths = torch.where(pick, torch.minimum(lengths, cut), lengths)
            _, logit_rnn, _ = net(ids, lengths, b.feat_ids[:, :1], b.feat_w[:, :1] * 0)
            target = b.labels * (1 - smoothing) + 0.5 * smoothing
            loss = F.binary_cross_entropy_with_logits(logit_rnn, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(deep, 1.0)
            opt.step()
        snapshots.append(deep_state(net))
        print(f"gru epoch {epoch + 1}: loss {loss.item():.4f}, "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)
        if on_epoch is not None:
            on_epoch(epoch + 1, net)
    return snapshots


@torch.no_grad()
def rnn_logits(net: SpamNet, items: Sequence[Prepared], batch_size: int = 128) -> np.ndarray:
    net.eval()
    out = []
    for b in batches(items, [0] * len(items), batch_size):
        out.append(net(b.ids, b.lengths, b.feat_ids[:, :1], b.feat_w[:, :1] * 0)[1])
    return torch.cat(out).double().numpy()


def fit_combination(wide: np.ndarray, rnn: np.ndarray, labels: np.ndarray,
                    c: float, rnn_share: float = 0.0) -> Combination:
    """The whole logit from out-of-fold [wide, rnn] logits.

    rnn_share <= 0: an L2-regularised logistic regression over both logits. On mail of one
    period the wide half is nearly perfect, so this gives the GRU almost no weight.
    rnn_share > 0: each logit is put on one scale (divided by its out-of-fold standard
    deviation), the GRU's counts `rnn_share` times the wide half's, and only the scale and
    bias of that sum are fitted (Platt scaling). Forward validation chose the share.
    """
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, max_iter=1000)
    if rnn_share <= 0:
        lr.fit(np.stack([wide, rnn], axis=1), labels)
        return Combination(float(lr.coef_[0, 0]), float(lr.coef_[0, 1]), float(lr.intercept_[0]))
    sw, sr = float(np.std(wide)) or 1.0, float(np.std(rnn)) or 1.0
    lr.fit((wide / sw + rnn_share * rnn / sr)[:, None], labels)
    a = float(lr.coef_[0, 0])
    return Combination(a / sw, a * rnn_share / sr, float(lr.intercept_[0]))


def new_net(mcfg: ModelConfig, seed: int) -> SpamNet:
    torch.manual_seed(seed)
    return SpamNet(mcfg)


__all__ = ["Batch", "Combination", "fold_of"]


@torch.no_grad()
def all_logits(net: SpamNet, items: Sequence[Prepared], batch_size: int = 128) -> np.ndarray:
    """(n, 3) logits of the finished network: whole, recurrent part, wide part."""
    net.eval()
    out = [torch.stack(net(*b[:4]), dim=1) for b in batches(items, [0] * len(items), batch_size)]
    return torch.cat(out).double().numpy()
