"""The model `bench.online` starts from: filterd's n-gram half trained on the older mail only.

The shipped model was trained on the whole corpus, newer folders included, so it has seen the
stream. This builds an artifact that has not: the shipped artifact with its IDF table and
wide weights refitted on the older folders (LinearSVC, C = 10, as docs/model.md's recipe),
the wide bias set to the SVM's, and the GRU switched off (its weight in the combination
set to 0, since the shipped GRU has seen the stream too). So the artifact scores with the
n-gram half alone, the half that learning moves, and it is a normal artifact: manifest,
hashes, thresholds, loaded by `filterd serve` like any other.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from filterd.pipeline import features, text
from filterd.pipeline.artifact import sha256_file

SVM_C = 10.0


def build(shipped: Path, out: Path, older: list[tuple[bytes, int]]) -> Path:
    """An artifact folder at `out` trained on `older` (raw, label 1 = spam)."""
    import onnx
    from onnx import numpy_helper

    from export.recipe import fit_wide_svm

    manifest = json.loads((shipped / "manifest.json").read_text())
    scheme = manifest["text"].get("features", "char_wb")
    wides = [text.analyze(raw).wide for raw, _ in older]
    df = np.zeros(features.BUCKETS, np.int64)
    for wide in wides:
        words, chars = features.hash_ngrams(wide, scheme)
        df[np.unique(np.concatenate((words, chars)))] += 1
    idf = features.fit_idf(df, len(wides))
    items = [text.Prepared(np.zeros(1, np.int64), *features.featurize(w, idf, scheme)) for w in wides]
    weights, bias = fit_wide_svm(items, np.array([label for _, label in older]), SVM_C)

    shutil.copytree(shipped, out)
    features.save_idf(out / "idf.npy", idf)
    np.save(out / "wide.npy", weights.astype(np.float32), allow_pickle=False)
    graph = onnx.load(str(shipped / "model.onnx"))
    values = {"net.wide": weights.astype(np.float32), "net.wide_bias": np.array([bias], np.float32),
              "net.rnn_weight": np.zeros(1, np.float32)}
    for init in graph.graph.initializer:
        if init.name in values:
            init.CopyFrom(numpy_helper.from_array(values[init.name], init.name))
    onnx.save(graph, str(out / "model.onnx"))

    manifest["version"] = "bench-online-older"
    manifest["model"]["combination"] = {"a_wide": 1.0, "a_rnn": 0.0, "bias": bias}
    # tag at logit 0; reject at logit 0.5: spamd's points are then 5 + 10 x logit
    manifest["thresholds"] = {"tag": 0.5, "reject": 1 / (1 + math.exp(-0.5))}
    manifest["files"] = {name: sha256_file(out / name) for name in manifest["files"]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
