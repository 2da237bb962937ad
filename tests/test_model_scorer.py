"""Scorer on the shipped artifact: loading and hash checks, scores, chunked = whole, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from filterd.errors import ModelError
from filterd.pipeline.scorer import Scorer
from tests.test_text_golden import numpy_path

DATA = Path(__file__).parent / "data" / "mime"


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> Scorer:
    return Scorer.load(model_dir, "cpu", threads=1)


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def test_loads_with_manifest_facts(scorer: Scorer, model_dir: Path) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert scorer.version == manifest["version"]
    assert scorer.provider == "CPUExecutionProvider"
    assert 0.0 < scorer.thresholds.tag <= scorer.thresholds.reject <= 1.0


def test_scores_are_probabilities_and_batch_independent(scorer: Scorer) -> None:
    raws = [p.read_bytes() for p in sorted(DATA.glob("*.eml"))]
    together = scorer.score(raws)
    alone = [scorer.score([raw])[0] for raw in raws]
    assert all(0.0 <= s <= 1.0 for s in together)
    assert np.allclose(together, alone, atol=1e-5)
    assert scorer.score([]) == []


def test_the_c_paths_leave_the_logits_as_they_were(scorer: Scorer) -> None:
    """featurize and wide_sums in C or in numpy: the same logits, to the bit."""
    raws = [p.read_bytes() for p in sorted(DATA.glob("*.eml"))]
    raws.append(b"Subject: long\r\n\r\n" + b"cheap pills, project notes and offers " * 2000)
    with_c = scorer.infer_logits([scorer.prepare(raw) for raw in raws])
    with numpy_path():
        with_numpy = scorer.infer_logits([scorer.prepare(raw) for raw in raws])
    assert with_c.tobytes() == with_numpy.tobytes()


def test_chunked_scoring_matches_whole(model_dir: Path) -> None:
    raw = (b"Subject: long message\r\n\r\n" + b"meeting notes and project plans " * 400)
    whole = Scorer.load(model_dir, "cpu", chunk_tokens=100000).score([raw, b"Subject: x\r\n\r\nhi"])
    for chunk in (1, 7, 64):
        chunked = Scorer.load(model_dir, "cpu", chunk_tokens=chunk).score([raw, b"Subject: x\r\n\r\nhi"])
        assert np.allclose(whole, chunked, atol=1e-5), chunk


def test_max_tokens_only_lowers_the_trained_cap(model_dir: Path, scorer: Scorer) -> None:
    trained = scorer.max_tokens
    assert Scorer.load(model_dir, "cpu", max_tokens=10 ** 6).max_tokens == trained
    small = Scorer.load(model_dir, "cpu", max_tokens=16)
    assert small.prepare(b"Subject: a\r\n\r\n" + b"word " * 500).ids.size == 16


def test_prepare_never_raises_on_hostile_input(scorer: Scorer) -> None:
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                      for i in range(100))
    hostile = [b"", b"\x00" * 1000, b"\xff" * 5000, nested,
               b"Content-Type: text/plain; charset=\"\x00\xff\"\r\n\r\nx",
               b"Content-Transfer-Encoding: base64\r\n\r\n====!!!!",
               b"Subject: big\r\n\r\n" + b"x" * (30 * 1024 * 1024)]
    scores = scorer.infer([scorer.prepare(raw) for raw in hostile])
    assert len(scores) == len(hostile) and all(0.0 <= s <= 1.0 for s in scores)


def test_tampered_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    target = _copy(model_dir, tmp_path)
    with (target / "vocab.json").open("ab") as f:
        f.write(b" ")
    with pytest.raises(ModelError, match="vocab.json: sha256"):
        Scorer.load(target)


def test_missing_manifest_or_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    target = _copy(model_dir, tmp_path)
    (target / "idf.npy").unlink()
    with pytest.raises(ModelError, match="idf.npy"):
        Scorer.load(target)
    (target / "manifest.json").unlink()
    with pytest.raises(ModelError, match="manifest.json"):
        Scorer.load(target)
    with pytest.raises(ModelError):
        Scorer.load(tmp_path / "nowhere")


def test_other_pipeline_version_is_refused(model_dir: Path, tmp_path: Path) -> None:
    target = _copy(model_dir, tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["text"]["pipeline_version"] = -1
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="pipeline"):
        Scorer.load(target)


def test_unknown_device_is_refused(model_dir: Path) -> None:
    with pytest.raises(ModelError, match="device"):
        Scorer.load(model_dir, "tpu")


def test_warmup_and_thread_safety(scorer: Scorer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    scorer.warmup()
    raws = [p.read_bytes() for p in sorted(DATA.glob("*.eml"))] * 4
    with ThreadPoolExecutor(4) as pool:
        prepared = list(pool.map(scorer.prepare, raws))
    expected = [scorer.prepare(r) for r in raws]
    assert all(np.array_equal(a.ids, b.ids) and np.array_equal(a.feat_w, b.feat_w)
               for a, b in zip(prepared, expected))
