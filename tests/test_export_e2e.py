"""Tiny end-to-end run: corpus → train → ONNX export → parity → Scorer → classify → evaluate."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.prereq import missing, require_module

require_module("torch")
if shutil.which("bogofilter") is None:
    missing("bogofilter is not installed (Debian: apt-get install bogofilter)")
pytestmark = [pytest.mark.torch, pytest.mark.corpus, pytest.mark.slow]

from export.config import TrainConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = ["--set", "max_messages=300", "--set", "epochs=2", "--set", "max_tokens=48",
        "--set", "vocab_size=3000", "--set", "hidden=16", "--set", "embed=16",
        "--set", "threads=1", "--set", "batch_size=32", "--set", "test_frac=0.15",
        "--set", "folds=3"]


@pytest.fixture(scope="module")
def tiny_model(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    proc = subprocess.run([sys.executable, "-m", "export", "train", "--corpus", str(corpus_dir),
                           "--out", str(out), *TINY], check=False, capture_output=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    (out.parent / "train.stderr").write_bytes(proc.stderr)
    return out


def test_train_ends_with_a_readable_summary(tiny_model: Path) -> None:
    said = (tiny_model.parent / "train.stderr").read_text()
    end = said[said.index("cross-validation (3 folds, mean):"):]
    assert "{" not in end and not re.search(r"\d\.\d{7,}", end), end   # no raw dicts or long floats
    assert re.search(r"^  whole  AUC [01]\.\d{5}   spam recall at <= 0\.2 % ham flagged +\d+\.\d %$",
                     end, re.M), end
    assert "test split (" in end
    thresholds = json.loads((tiny_model / "manifest.json").read_text())["thresholds"]
    assert f"thresholds: tag {thresholds['tag']:.5f}, reject {thresholds['reject']:.5f}" in end
    assert "forward (folders: trained on the older mail, scored on the newer):" in end
    assert re.search(r"^  at its own tag threshold: \d+\.\d % of newer ham flagged", end, re.M), end
    same = thresholds["tag"] == thresholds["reject"]
    assert ("warning: tag and reject are the same" in end) is same, end


def test_artifact_is_complete_and_small(tiny_model: Path) -> None:
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "vocab.json", "idf.npy", "wide.npy", "split.json"}
    assert max(manifest["parity"].values()) <= 1e-4
    assert manifest["corpus"]["splits"]["train"]["spam"] > 0
    for split in ("val", "test"):
        for part in ("whole", "rnn", "wide"):
            assert 0.0 <= manifest["metrics"][split][part]["auc"] <= 1.0
    assert manifest["text"]["max_tokens"] == 48
    assert set(manifest["model"]["combination"]) == {"a_wide", "a_rnn", "bias"}
    for part in ("whole", "rnn", "wide"):
        assert set(manifest["metrics"]["cv"][part]["auc"]) == {"mean", "min", "max"}
    forward = manifest["metrics"]["forward"]     # older corpus folders train, newer are scored
    assert forward["split"] == "folders" and forward["train"]["ham"] > 0
    assert forward["bogofilter"]["auc"] > 0.5           # the reference row, really run
    for part in ("whole", "rnn", "wide", "bogofilter"):
        assert 0.0 <= forward[part]["auc"] <= 1.0, part
        low, high = forward[part]["auc_5_95"]
        assert low <= forward[part]["auc"] <= high
    assert forward["thresholds"]["tag"] >= TrainConfig().tag_floor     # the floor holds
    assert forward["whole"]["at_tag"]["fp"] + forward["whole"]["at_tag"]["tn"] > 0


def test_wide_weights_are_the_wide_contribution_to_the_whole_logit(tiny_model: Path) -> None:
    from filterd.pipeline.scorer import Scorer

    scorer = Scorer.load(tiny_model, "cpu")
    a_rnn = json.loads((tiny_model / "manifest.json").read_text())["model"]["combination"]["a_rnn"]
    items = [scorer.prepare(b"Subject: cheap pills %d\r\n\r\nbuy now, friend %d" % (i, i))
             for i in range(5)]
    logits = scorer.infer_logits(items)
    wide = np.array([np.dot(scorer.wide_weights[p.feat_ids], p.feat_w) for p in items])
    rest = logits[:, 0] - wide - a_rnn * logits[:, 1]       # the bias: one constant
    assert np.allclose(rest, rest[0], atol=1e-4)
    assert np.allclose(logits[:, 2] - wide, rest[0], atol=1e-4)
    assert sum(f.stat().st_size for f in tiny_model.iterdir()) < 20 * 1024 * 1024


def test_classify_and_evaluate_with_the_tiny_model(tiny_model: Path, corpus_dir: Path,
                                                   tmp_path: Path) -> None:
    with tarfile.open(next(corpus_dir.glob("*spam.tar.bz2"))) as tar:
        members = [m for m in tar if m.isfile() and m.name != "spam/cmds"][:20]
        tar.extractall(tmp_path, members=members, filter="data")
    proc = subprocess.run([sys.executable, "-m", "filterd", "classify", "--model",
                           str(tiny_model), str(tmp_path)], check=False, capture_output=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert len(lines) == 20 and all(0 <= x["score"] <= 1 for x in lines)
    proc = subprocess.run([sys.executable, "-m", "export", "evaluate", "--model", str(tiny_model),
                           "--ham", str(REPO / "tests" / "data" / "mime"), "--spam", str(tmp_path)],
                          check=False, capture_output=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    figures = json.loads(proc.stdout)
    assert figures["spam"] == 20 and figures["at_tag"]["tp"] + figures["at_tag"]["fn"] == 20
    assert set(figures["parts"]) == {"rnn", "wide"}


def test_parity_check_fails_loudly(tiny_model: Path) -> None:
    from export import to_onnx
    from filterd.pipeline.scorer import Scorer

    scorer = Scorer.load(tiny_model, "cpu")
    items = [scorer.prepare(b"Subject: hello\r\n\r\nsome words here")]
    expected = scorer.infer_logits(items)[:, 0]
    parts = (scorer.vocab, scorer.idf, scorer.wide_weights, scorer.max_tokens)
    assert to_onnx.check_parity(tiny_model / "model.onnx", scorer.manifest, parts, items,
                                expected)["chunk_7"] <= 1e-4
    with pytest.raises(to_onnx.ParityError, match="differ"):
        to_onnx.check_parity(tiny_model / "model.onnx", scorer.manifest, parts, items,
                             expected + np.float64(1e-3))


def test_dry_run_trains_one_batch_deterministically(corpus_dir: Path, tmp_path: Path) -> None:
    manifests = []
    for run in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "export", "train", "--corpus",
                               str(corpus_dir), "--out", str(tmp_path / run), "--dry-run",
                               *TINY[:2], "--set", "hidden=8", "--set", "embed=8", "--set",
                               "max_tokens=16"], check=False, capture_output=True, cwd=REPO,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        manifests.append(json.loads((tmp_path / run / "manifest.json").read_text()))
    assert len(manifests[0]["history"]) == 1
    # same seed, same data: the same weights, byte for byte
    assert manifests[0]["files"] == manifests[1]["files"]


def test_too_little_mail_and_unknown_setting_are_clean_errors(tmp_path: Path) -> None:
    for kind in ("ham", "spam"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "1.eml").write_bytes(b"Subject: %s\n\nhello\n" % kind.encode())
    base = [sys.executable, "-m", "export", "train", "--ham", str(tmp_path / "ham"),
            "--spam", str(tmp_path / "spam"), "--out", str(tmp_path / "m")]
    proc = subprocess.run(base, check=False, capture_output=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and b"no ham or no spam" in proc.stderr
    proc = subprocess.run(base + ["--set", "bogus=1"], check=False, capture_output=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 2 and b"unknown setting 'bogus=1'" in proc.stderr
    assert not (tmp_path / "m" / "manifest.json").exists()
