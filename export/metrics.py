"""Ranking metrics and threshold calibration, in numpy (no sklearn in our dependencies).

Labels are 1 for spam; a message is flagged when its score is at or above a threshold.
"""

from __future__ import annotations

import math

import numpy as np


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Spam probabilities from logits, clipped as the daemon's scorer clips them."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random spam outscores a random ham (ties count half)."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = np.asarray(scores)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_at_fpr(ham_scores: np.ndarray, max_fpr: float) -> float:
    """Lowest threshold that flags at most max_fpr of these ham (score >= threshold flags)."""
    ham = np.sort(np.asarray(ham_scores, dtype=np.float64))[::-1]
    allowed = math.floor(max_fpr * len(ham) + 1e-9)
    if len(ham) == 0:
        return 0.5
    if allowed >= len(ham):
        return float(ham[-1])
    return float(np.nextafter(ham[allowed], np.inf))


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion counts, ham false-positive rate and spam recall at one threshold."""
    labels = np.asarray(labels).astype(bool)
    flagged = np.asarray(scores) >= threshold
    tp, fp = int((flagged & labels).sum()), int((flagged & ~labels).sum())
    fn, tn = int((~flagged & labels).sum()), int((~flagged & ~labels).sum())
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "ham_fpr": fp / max(fp + tn, 1), "spam_recall": tp / max(tp + fn, 1)}


def summary(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC and spam recall at <= 0.2 % ham flagged (the issue's headline pair).

    Both depend only on the order of the scores: pass logits where there are any.
    """
    labels = np.asarray(labels).astype(bool)
    t = threshold_at_fpr(np.asarray(scores)[~labels], 0.002)
    point = at_threshold(labels, scores, t)
    return {"auc": roc_auc(labels, scores), "recall_at_0.2pct_fpr": point["spam_recall"],
            "ham": int((~labels).sum()), "spam": int(labels.sum())}


def calibrate(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """tag: <= 0.5 % of ham at or above; reject: <= 0.1 % (computed on validation)."""
    ham = np.asarray(scores)[~np.asarray(labels).astype(bool)]
    tag = threshold_at_fpr(ham, 0.005)
    reject = max(threshold_at_fpr(ham, 0.001), tag)
    return {"tag": min(tag, 1.0), "reject": min(reject, 1.0)}
