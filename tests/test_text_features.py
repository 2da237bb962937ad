"""Hashed n-gram features: the vectorised hashing against a plain-Python reference."""

from __future__ import annotations

import re

import numpy as np

from filterd import features


def _reference_spans(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """Words and within-word char 3-5-grams, the slow and obvious way."""
    words = re.findall(rb"[a-z0-9\x80-\xff]+", data)
    grams = [w[i:i + n] for n in features.CHAR_NGRAMS for w in words for i in range(len(w) - n + 1)]
    return words, grams



def test_vectorised_hashing_matches_reference_multiset() -> None:
    data = b"the cheap viagra pills, cheap! \xe9t\xe9 x1 ab abc abcdef"
    words, chars = features.hash_ngrams(data)
    ref_words, ref_grams = _reference_spans(data)
    assert len(words) == len(ref_words)
    assert len(chars) == len(ref_grams)
    # a span's bucket depends only on its bytes, not where it occurs
    alone = [int(features.hash_ngrams(w)[0][0]) for w in ref_words]
    assert sorted(alone) == sorted(words.tolist())


def test_same_span_same_bucket_and_spread() -> None:
    words, chars = features.hash_ngrams(b"spam spam eggs")
    assert words[0] == words[1] != words[2]
    # "spa" occurs twice: identical buckets; all buckets in range
    assert chars.min() >= 0 and chars.max() < features.BUCKETS
    many = features.hash_ngrams(b" ".join(b"w%d" % i for i in range(5000)))[0]
    assert many.size == 5000 and len(np.unique(many)) > 4950   # ~12 collisions expected


def test_featurize_unit_norms_and_empty() -> None:
    idf = np.ones(features.BUCKETS, np.float32)
    ids, w = features.featurize(b"hello world hello", idf)
    assert ids.dtype == np.int64 and w.dtype == np.float32
    # words and char n-grams are each normalised to unit length
    assert abs(float(np.sum(w ** 2)) - 2.0) < 1e-5
    ids, w = features.featurize(b"", idf)
    assert ids.shape == (1,) and float(w[0]) == 0.0


def test_idf_round_trip(tmp_path) -> None:
    df = features.document_frequency([b"common rare", b"common"])
    idf = features.fit_idf(df, 2)
    common = features.hash_ngrams(b"common")[0][0]
    rare = features.hash_ngrams(b"rare")[0][0]
    assert idf[rare] > idf[common]
    features.save_idf(tmp_path / "idf.npy", idf)
    assert np.array_equal(features.load_idf(tmp_path / "idf.npy"), idf)
