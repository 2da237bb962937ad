"""Reasons: the features an explanation lists are real spans of the message, add up to the
logit, and are faithful (removing them moves the score more than removing random ones)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from filterd.pipeline import explain, features, text
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.smtp import REPO

SPAMMY = b"Subject: free money\r\n\r\nClick here for FREE money now!!! Act today, limited offer.\r\n"


def test_first_spans_hash_back_to_their_buckets() -> None:
    data = text.analyze(SPAMMY).wide
    words, chars = features.hash_ngrams(data)
    found_words, found_chars = features.first_spans(data, np.unique(words), np.unique(chars))
    assert set(found_words) == set(np.unique(words).tolist())
    assert set(found_chars) == set(np.unique(chars).tolist())
    for bucket, span in found_words.items():
        assert bucket in features.hash_ngrams(span)[0].tolist(), span
    for bucket, span in found_chars.items():
        assert bucket in features.hash_ngrams(span)[1].tolist(), span
    assert found_words[int(features.hash_ngrams(b"money")[0][0])] == b"money"


def test_contributions_add_up_to_the_logit(scorer: Any) -> None:
    why = explain.explain(scorer, SPAMMY)
    listed = sum(r.contribution for r in why.reasons)
    assert why.recurrent + why.other_ngrams + listed == pytest.approx(why.logit, abs=1e-4)
    logits = scorer.infer_logits([scorer.prepare(SPAMMY)])[0]
    assert why.logit == pytest.approx(logits[0], abs=1e-6)
    magnitudes = [abs(r.contribution) for r in why.reasons]
    assert magnitudes == sorted(magnitudes, reverse=True) and len(magnitudes) == explain.TOP_K
    assert {"money", "free"} <= {r.text for r in why.reasons if r.kind == "word"}


def test_an_empty_message_has_no_features(scorer: Any) -> None:
    why = explain.explain(scorer, b"")
    assert why.reasons == () and why.recurrent == pytest.approx(why.logit)


def _without(prepared: text.Prepared, drop: np.ndarray) -> text.Prepared:
    weights = prepared.feat_w.copy()
    weights[drop] = 0.0
    return prepared._replace(feat_w=weights)


@pytest.mark.corpus
def test_top_features_are_faithful(scorer: Any, corpus_dir: Path) -> None:
    """On corpus spam: zeroing the listed spam-ward features lowers the logit more than
    zeroing as many random features of the same message (averaged over messages)."""
    rng = np.random.default_rng(0)
    top_drops, random_drops = [], []
    for raw in corpus_messages(corpus_dir, "spam", 40):
        prepared = scorer.prepare(raw)
        contrib = explain.contributions(scorer, prepared)
        picked = explain.top(contrib, explain.TOP_K)
        picked = picked[contrib[picked] > 0]
        if picked.size == 0 or contrib.size < 2 * explain.TOP_K:
            continue
        others = rng.choice(contrib.size, picked.size, replace=False)
        whole, cut_top, cut_random = scorer.infer_logits(
            [prepared, _without(prepared, picked), _without(prepared, others)])[:, 0]
        top_drops.append(whole - cut_top)
        random_drops.append(whole - cut_random)
    assert len(top_drops) >= 30
    assert np.mean(top_drops) > 3 * max(np.mean(random_drops), 1e-6), (np.mean(top_drops), np.mean(random_drops))
    assert np.mean(np.array(top_drops) > np.array(random_drops)) >= 0.9


@pytest.mark.slow
def test_classify_explain_prints_the_reasons_as_json(tmp_path: Path) -> None:
    path = tmp_path / "spammy.eml"
    path.write_bytes(SPAMMY)
    result = subprocess.run([sys.executable, "-m", "filterd", "classify", "--explain", str(path)],
                            cwd=REPO, capture_output=True, text=True, check=True, timeout=120)
    line = json.loads(result.stdout)
    why = line["explanation"]
    assert set(why) == {"logit", "recurrent", "other_ngrams", "features"}
    assert len(why["features"]) == explain.TOP_K
    assert {f["kind"] for f in why["features"]} <= {"word", "chars"}
    assert any(f["text"] == "money" and f["contribution"] > 0 for f in why["features"])
