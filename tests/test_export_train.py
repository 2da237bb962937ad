"""Training pieces on small synthetic data: the GRU trained alone, averaging, the folded combination."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.prereq import require_module

torch = require_module("torch")
require_module("sklearn")
pytestmark = [pytest.mark.torch]

from export import recipe  # noqa: E402
from export.model import ModelConfig  # noqa: E402
from export.fit import fold_in  # noqa: E402
from filterd.pipeline.text import Prepared  # noqa: E402


def _items(n: int = 64) -> tuple[list[Prepared], np.ndarray]:
    """Spam says token 2 then 3, ham token 3 then 2; features tell the same story."""
    labels = (np.arange(n) % 2).astype(np.int64)
    items = [Prepared(np.array([2, 3, 1] if y else [3, 2, 1], np.int64),
                      np.array([7 if y else 3, 5], np.int64), np.full(2, 0.7, np.float32))
             for y in labels]
    return items, labels


def test_gru_alone_learns_order_and_leaves_the_wide_half_alone() -> None:
    items, labels = _items()
    net = recipe.new_net(ModelConfig(vocab_size=4, embed=4, hidden=8, buckets=16, dropout=0.0), 1)
    snaps = recipe.fit_rnn(net, items, labels, epochs=25, lr=0.03, weight_decay=0.0,
                           batch_size=16, seed=1)
    assert len(snaps) == 25 and float(net.wide.abs().sum()) == 0.0
    logits = recipe.rnn_logits(net, items)
    assert ((logits > 0) == labels.astype(bool)).all()      # a bag of tokens could not
    avg = recipe.average_states(snaps[-3:])
    assert torch.allclose(avg["head.bias"], sum(s["head.bias"] for s in snaps[-3:]) / 3)


class _Fitted:
    def __init__(self, net, w: np.ndarray, b: float) -> None:
        self.net, self.w, self.b = net, w, b


def test_folded_combination_is_what_the_network_computes() -> None:
    items, labels = _items(8)
    net = recipe.new_net(ModelConfig(vocab_size=4, embed=4, hidden=8, buckets=16), 1)
    w = np.zeros(16, np.float32)
    w[7], w[3] = 1.5, -2.0
    comb = recipe.Combination(a_wide=3.0, a_rnn=0.25, bias=-0.5)
    rnn = recipe.rnn_logits(net, items)
    expected = comb.apply(recipe.wide_logits(w, 0.1, items), rnn)
    shipped = fold_in(_Fitted(net, w, 0.1), comb)
    got = recipe.all_logits(shipped, items)
    assert np.allclose(got[:, 0], expected, atol=1e-5)
    assert np.allclose(got[:, 1], rnn, atol=1e-6)
    # the wide weights are exactly each bucket's contribution to the whole logit
    assert float(shipped.wide.detach()[7]) == pytest.approx(4.5)
