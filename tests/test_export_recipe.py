"""The training recipe's pieces: the cross-validation fold rule, the wide half, the combination."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.prereq import require_module

require_module("torch")
require_module("sklearn")
pytestmark = [pytest.mark.torch]

from export import recipe  # noqa: E402
from filterd.pipeline.text import Prepared  # noqa: E402


def test_folds_keep_duplicates_together_and_hold_every_message_once() -> None:
    raws = [b"Subject: %d\n\nbody %d\n" % (i, i * 7) for i in range(500)]
    raws += raws[:40]                                   # 40 exact duplicates
    folds = [recipe.fold_of(r, 5) for r in raws]
    assert folds == [recipe.fold_of(r, 5) for r in raws]            # a pure function
    assert folds[500:] == folds[:40]                                 # duplicates together
    members = [{i for i, f in enumerate(folds) if f == k} for k in range(5)]
    assert sum(len(m) for m in members) == len(raws)                 # every message once
    assert all(not (a & b) for i, a in enumerate(members) for b in members[i + 1:])
    assert all(60 <= len(m) <= 160 for m in members)                 # roughly even


def _items(n: int, rng: np.random.Generator) -> tuple[list[Prepared], np.ndarray]:
    """Spam carries bucket 7, ham bucket 3, all carry 5 and some noise buckets."""
    labels = (np.arange(n) % 2).astype(np.int64)
    items = []
    for y in labels:
        ids = np.array([7 if y else 3, 5, int(rng.integers(10, 100))], np.int64)
        items.append(Prepared(np.ones(3, np.int64), ids, np.full(3, 0.5, np.float32)))
    return items, labels


def test_wide_svm_learns_the_separating_buckets() -> None:
    items, labels = _items(80, np.random.default_rng(1))
    w, b = recipe.fit_wide_svm(items, labels, 1.0)
    assert w.shape == (1 << 20,) and w.dtype == np.float32
    assert w[7] > 0.3 and w[3] < -0.3 and w[0] == 0
    logits = recipe.wide_logits(w, b, items)
    assert ((logits > 0) == labels.astype(bool)).all()


def test_wide_svm_ham_weight_moves_the_boundary_away_from_ham() -> None:
    """Overlapping classes: weighting ham makes fewer ham score above zero."""
    rng = np.random.default_rng(3)
    labels = (np.arange(400) % 2).astype(np.int64)
    items = [Prepared(np.ones(2, np.int64), np.array([7, 5], np.int64),
                      np.array([y + rng.normal(0, 0.8), 1.0], np.float32)) for y in labels]
    flagged = []
    for hw in (1.0, 8.0):
        w, b = recipe.fit_wide_svm(items, labels, 1.0, hw)
        flagged.append(int((recipe.wide_logits(w, b, items)[labels == 0] > 0).sum()))
    assert flagged[1] < flagged[0]


def test_combination_is_learned_and_drops_a_useless_part() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 2000)
    wide = (2 * labels - 1) * 1.5 + rng.normal(0, 1, 2000)           # informative
    noise = rng.normal(0, 3, 2000)                                   # carries nothing
    comb = recipe.fit_combination(wide, noise, labels, 1.0)
    assert comb.a_wide > 1.0 and abs(comb.a_rnn) < 0.05
    # two informative parts: both get weight, and the combination beats either alone
    rnn = (2 * labels - 1) * 1.0 + rng.normal(0, 1, 2000)
    comb = recipe.fit_combination(wide, rnn, labels, 1.0)
    assert comb.a_wide > 0.5 and comb.a_rnn > 0.5
    both = comb.apply(wide, rnn)
    assert np.allclose(both, comb.a_wide * wide + comb.a_rnn * rnn + comb.bias)
    acc = [((x > np.median(x)) == labels).mean() for x in (wide, rnn, both)]
    assert acc[2] > max(acc[:2])
