"""Writes model_artifacts/: model.onnx, vocab.json, idf.npy, wide.npy, split.json, manifest.json.

The manifest is written last and only after the parity check passed, so a failed export
leaves no loadable artifact behind.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np

from export import to_onnx
from export.config import as_dict
from export.corpus import ReadStats, Sample
from export.model import SpamNet
from filterd.pipeline import features, text
from filterd.pipeline.artifact import FORMAT, sha256_file
from filterd.pipeline.vocab import Vocab

LIBRARIES = ("torch", "onnx", "onnxruntime", "numpy", "scikit-learn")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _corpus(parts: dict[str, list[Sample]], stats: ReadStats) -> dict:
    counts = {k: {"ham": sum(s.label == 0 for s in v), "spam": sum(s.label == 1 for s in v)}
              for k, v in parts.items()}
    sources = Counter(s.source.split(":")[0] if ":" in s.source else "paths"
                      for v in parts.values() for s in v)
    return {"description": "SpamAssassin public corpus" if any(".tar" in k for k in sources)
            else "user mail", "sources": dict(sources), "splits": counts,
            "read": stats.messages, "malformed": stats.malformed}


def write(out: Path, net: SpamNet, vocab: Vocab, idf: np.ndarray, *, cfg, mcfg, parts, stats,
          metrics: dict, thresholds: dict, history: list, combination: dict, parity_items: list,
          parity_logits: np.ndarray, seconds: float, argv: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    spec = {"pipeline_version": text.PIPELINE_VERSION, "max_tokens": cfg.max_tokens,
            "feature_bits": features.BITS, "char_ngrams": list(features.CHAR_NGRAMS),
            "features": cfg.features}
    vocab.save(out / "vocab.json", spec)
    features.save_idf(out / "idf.npy", idf)
    # The wide branch's per-bucket weights as they enter the whole logit, for explanations
    # (filterd.pipeline.scorer.Scorer.wide_weights); the same numbers as in the graph.
    wide = net.wide.detach().cpu().numpy().astype(np.float32)
    np.save(out / "wide.npy", wide, allow_pickle=False)
    (out / "split.json").write_text(json.dumps(
        {"seed": cfg.split_seed, "val_frac": 0.0, "test_frac": cfg.test_frac,
         "rule": "sha256(seed as 8 little-endian bytes + message) -> uniform; < test_frac: test",
         "folds": cfg.folds, "fold_rule": "sha256(b'filterd-cv\\0' + message), first 8 bytes "
                                         "little-endian, mod folds",
         "sources": {k: sorted(s.source for s in v) for k, v in parts.items()}}, indent=0))
    to_onnx.export(net, out / "model.onnx")
    now = dt.datetime.now(dt.UTC)
    manifest = {
        "format": FORMAT, "version": now.strftime("%Y%m%d-%H%M%S") + f"-s{cfg.seed}",
        "created": now.isoformat(timespec="seconds"), "text": spec,
        "model": {"hidden": mcfg.hidden, "embed": mcfg.embed, "vocab_size": len(vocab),
                  "design": "embedding-GRU-pooling (trained alone) + hashed word/char n-gram "
                            "LinearSVC (trained alone), combined by a logistic regression "
                            "on out-of-fold logits",
                  "combination": combination,
                  "opset": to_onnx.OPSET},
        "thresholds": thresholds,
        "thresholds_from": "out-of-fold scores of the combined model (cross-validation)",
        "metrics": metrics, "corpus": _corpus(parts, stats),
        "split_seed": cfg.split_seed, "train_config": as_dict(cfg), "model_config": as_dict(mcfg),
        "history": history, "train_seconds": round(seconds, 1), "command": argv,
        "libraries": _versions(),
    }
    manifest["parity"] = to_onnx.check_parity(out / "model.onnx", manifest,
                                              (vocab, idf, wide, cfg.max_tokens),
                                              parity_items, parity_logits)
    manifest["files"] = {name: sha256_file(out / name)
                         for name in ("model.onnx", "vocab.json", "idf.npy", "wide.npy", "split.json")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    worst = max(manifest["parity"].values(), default=0.0)
    print(f"wrote {out} (onnxruntime and torch agree within {worst:.1e}, whole and chunked)",
          file=sys.stderr)
    return manifest
