"""The online update of the n-gram half: passive-aggressive steps kept as a delta over the
shipped wide weights.

A lesson (message x, class y = +1 spam / -1 ham) moves the wide weights by `coef * x`,
where x is the message's sparse n-gram vector (words and characters each of unit length,
so |x|^2 = 2) and coef is a PA-I step (Crammer et al. 2006) taken in the units the wide half
was trained in: the shipped wide weights are the linear SVM's times `a_wide` (the
combination's weight, manifest model.combination), so one SVM margin is `a_wide` logits:

    loss = max(0, 1 - y * logit / a_wide)         the whole model's logit, GRU included
    coef = y * a_wide * min(C, loss / |x|^2)      C = 2

C = 2, not the textbook 1: the GRU, which no lesson moves, counts as much as the n-grams in
the shipped model (docs/model.md), so one step of at most 2 SVM margins is what lets a
taught message cross the tag threshold against a confident GRU (a corrected message should
not be tagged again). A message already on the right side by a margin gets coef 0: it is
still a lesson (kept, and folded into retraining).

The delta is held as integers: each lesson adds round(coef * x * 2**32) to its buckets. Sums
of integers do not depend on their order, so every worker that applies the same lessons,
in whatever order, holds the same delta to the bit, and forgetting a lesson subtracts
exactly what it added. The weight the scorer uses is the shipped one plus the delta,
clipped to +-CLIP: written into the scorer's own wide table, so scanning costs what it
did (the same sparse dot, the same table).
"""

from __future__ import annotations

import hashlib

import numpy as np

from filterd.learning import Label

C = 2.0                  # PA-I aggressiveness, in SVM units (see above)
ONE = float(1 << 32)     # fixed point: a delta of 1.0 is 2**32
CLIP = 8.0               # no learned weight moves further than this from the shipped one (logits)


def message_key(raw: bytes) -> str:
    """A lesson's key: SHA-256 of the message with CRLF as LF (spamc sends what the MTA
    stored, Dovecot what it holds; the same message either way)."""
    return hashlib.sha256(bytes(raw).replace(b"\r\n", b"\n")).hexdigest()


def sign(label: Label) -> float:
    return 1.0 if label == "spam" else -1.0


def step(logit: float, sqnorm: float, label: Label, scale: float, c: float = C) -> float:
    """The PA-I coefficient of one lesson (see the module docstring); 0.0 when no step."""
    y = sign(label)
    loss = max(0.0, 1.0 - y * logit / scale)
    if loss == 0.0 or sqnorm <= 0.0:
        return 0.0
    return y * scale * min(c, loss / sqnorm)


def fixed(coef: float, weights: np.ndarray) -> np.ndarray:
    """One lesson's contribution to each of its buckets, as integers (int64)."""
    return np.rint(coef * weights.astype(np.float64) * ONE).astype(np.int64)


class Delta:
    """The learned delta of one scorer's wide table: integer sums, written through as
    shipped + clip(sum) into `table` (the scorer's float32 wide column, updated in place)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.shipped: np.ndarray | None = None   # copies made at the first lesson only
        self.sums: np.ndarray | None = None

    def add(self, ids: np.ndarray, amounts: np.ndarray, sign_: int = 1) -> None:
        """Add (sign_ = 1) or take back (-1) one lesson's contribution."""
        if self.sums is None:
            self.shipped = self.table.copy()
            self.sums = np.zeros(self.table.shape, np.int64)
        assert self.shipped is not None
        np.add.at(self.sums, ids, amounts if sign_ > 0 else -amounts)
        learned = np.clip(self.sums[ids] / ONE, -CLIP, CLIP)
        self.table[ids] = (self.shipped[ids] + learned).astype(np.float32)

    def replace(self, sums: np.ndarray) -> None:
        """Make `sums` the delta, writing only the buckets whose weight changes."""
        if self.sums is None and not sums.any():
            return
        if self.sums is None:
            self.shipped, self.sums = self.table.copy(), np.zeros(self.table.shape, np.int64)
        assert self.shipped is not None
        ids = np.flatnonzero(self.sums != sums)
        self.table[ids] = (self.shipped[ids] + np.clip(sums[ids] / ONE, -CLIP, CLIP)).astype(np.float32)
        self.sums = sums

    def clear(self) -> None:
        """Back to the shipped weights."""
        if self.shipped is not None:
            self.table[:] = self.shipped
        self.shipped = self.sums = None

    def touched(self) -> int:
        return 0 if self.sums is None else int(np.count_nonzero(self.sums))
