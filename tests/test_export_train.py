"""Training pieces on small synthetic batches: the loss terms and the wide branch trained first."""

from __future__ import annotations

import pytest

from tests.fixtures.prereq import require_module

torch = require_module("torch")
pytestmark = [pytest.mark.torch]

from export.config import TrainConfig  # noqa: E402
from export.dataset import Batch  # noqa: E402
from export.model import ModelConfig, SpamNet  # noqa: E402
from export.train import fit_wide, loss_fn  # noqa: E402


def _batches(n: int = 8) -> list[Batch]:
    """Spam carries feature 7, ham feature 3; both carry the shared feature 5."""
    out = []
    for b in range(n):
        labels = torch.tensor([float((b + i) % 2) for i in range(4)])
        feat_ids = torch.stack([torch.tensor([7 if y else 3, 5]) for y in labels])
        feat_w = torch.full((4, 2), 0.7)
        ids = torch.ones((4, 3), dtype=torch.int64)
        out.append(Batch(ids, torch.full((4,), 3), feat_ids, feat_w, labels))
    return out


def test_wide_first_learns_the_separating_features_and_averages_runs() -> None:
    net = SpamNet(ModelConfig(vocab_size=4, embed=4, hidden=4, buckets=16))
    cfg = TrainConfig(wide_first=2, wide_runs=3, wide_lr=0.1, wide_label_smoothing=0.0)
    fit_wide(cfg, net, _batches(), torch.device("cpu"))
    assert net.wide[7] > 0.5 and net.wide[3] < -0.5
    assert net.wide[0] == 0 and net.wide[15] == 0     # never seen: still zero


def test_wide_drop_one_leaves_the_wide_logit_out_of_the_sum() -> None:
    labels = torch.tensor([1.0, 0.0])
    rnn, wide = torch.tensor([0.3, -0.2]), torch.tensor([5.0, 5.0])
    out = (rnn + wide, rnn, wide)
    cfg = TrainConfig(label_smoothing=0.0, wide_label_smoothing=0.0, aux_weight=0.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert float(loss_fn(out, labels, cfg)) == pytest.approx(float(bce(rnn + wide, labels)))
    cfg.wide_drop = 1.0
    assert float(loss_fn(out, labels, cfg)) == pytest.approx(float(bce(rnn, labels)))


def test_wide_smoothing_is_its_own_setting() -> None:
    labels = torch.tensor([1.0, 0.0])
    zero = torch.zeros(2)
    big = torch.tensor([20.0, -20.0])
    cfg = TrainConfig(label_smoothing=0.0, wide_label_smoothing=0.1, aux_weight=1.0)
    smoothed = float(loss_fn((big, big, big), labels, cfg))
    cfg.wide_label_smoothing = 0.0
    assert float(loss_fn((big, big, big), labels, cfg)) < smoothed
    assert float(loss_fn((zero, zero, zero), labels, cfg)) > 0
