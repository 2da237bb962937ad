"""Ragged rows -> one zero-padded matrix: how serving (scorer.py) and training
(export/dataset.py) batch token ids and n-gram features, so both pad the same way.

Zero is `<pad>` for token ids and "no feature" for n-gram weights; the model reads
`lengths` (tokens) and zero weights (features), so the padding never counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad(rows: Sequence[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    """(len(rows), longest row) of `dtype`, each row copied to the left and zero-filled."""
    out = np.zeros((len(rows), max((len(r) for r in rows), default=0)), dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
