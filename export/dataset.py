"""Prepared messages → padded torch batches, built on filterd.pipeline.text so training and serving agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from filterd.pipeline.padding import pad
from filterd.pipeline.text import Prepared


class Batch(NamedTuple):
    ids: torch.Tensor       # (batch, time) int64, 0 = <pad>
    lengths: torch.Tensor   # (batch,) int64, >= 1
    feat_ids: torch.Tensor  # (batch, k) int64
    feat_w: torch.Tensor    # (batch, k) float32, 0 where padded
    labels: torch.Tensor    # (batch,) float32, 1 = spam


def collate(items: Sequence[Prepared], labels: Sequence[int]) -> Batch:
    lengths = np.array([len(p.ids) for p in items], dtype=np.int64)
    ids = pad([p.ids for p in items], np.int64)
    feat_ids = pad([p.feat_ids for p in items], np.int64)
    feat_w = pad([p.feat_w for p in items], np.float32)
    return Batch(torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(feat_ids),
                 torch.from_numpy(feat_w), torch.tensor(list(labels), dtype=torch.float32))


def batches(items: Sequence[Prepared], labels: Sequence[int], size: int,
            order: np.ndarray | None = None) -> list[Batch]:
    """Batches in the given order (default: as stored)."""
    order = np.arange(len(items)) if order is None else order
    return [collate([items[i] for i in order[s:s + size]], [labels[i] for i in order[s:s + size]])
            for s in range(0, len(order), size)]
