"""ONNX export of the chunk step and the onnxruntime parity check (whole and chunked).

Opset 17, the TorchScript exporter (`dynamo=False`: the newer one needs onnxscript), named
inputs and outputs, dynamic batch, time and feature axes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.model import INPUTS, OUTPUTS, SpamNet, StepModule
from filterd.pipeline.scorer import Scorer
from filterd.pipeline.text import Prepared

OPSET = 17
TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """torch and onnxruntime disagree: the export must not ship."""


def export(net: SpamNet, path: Path) -> None:
    net = net.cpu().eval()
    b, t, k, h = 2, 5, 3, net.cfg.hidden
    example = (torch.ones(b, t, dtype=torch.long), torch.tensor([5, 3]),
               torch.zeros(b, k, dtype=torch.long), torch.zeros(b, k),
               torch.zeros(b, h), torch.full((b, h), -1.0), torch.zeros(b, h),
               torch.zeros(b), torch.zeros(b))
    axes = {"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
            "feat_ids": {0: "batch", 1: "k"}, "feat_w": {0: "batch", 1: "k"}}
    axes.update({name: {0: "batch"} for name in INPUTS[4:] + OUTPUTS})
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter warns about GRU batch sizes unless h0 is an input; ours is.
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        torch.onnx.export(StepModule(net), example, str(path), input_names=INPUTS,
                          output_names=OUTPUTS, dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)


def check_parity(path: Path, manifest: dict, scorer_parts: tuple, items: list[Prepared],
                 expected: np.ndarray) -> dict[str, float]:
    """Score `items` with onnxruntime whole and in 64- and 7-token chunks; raise if off by > 1e-4."""
    vocab, idf, wide, max_tokens = scorer_parts
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = {}
    for chunk in (max_tokens, 64, 7):
        scorer = Scorer(session, manifest, vocab, idf, wide, max_tokens, chunk)
        got = scorer.infer_logits(items)[:, 0]
        diff = float(np.max(np.abs(got - expected))) if len(items) else 0.0
        worst[f"chunk_{chunk}"] = diff
        if not diff <= TOLERANCE:
            raise ParityError(f"onnxruntime and torch logits differ by {diff:.2e} "
                              f"(chunks of {chunk} tokens), more than {TOLERANCE}")
    return worst
