"""Hashed n-gram features: the vectorised hashing against a plain-Python reference."""

from __future__ import annotations

import re

import numpy as np
import pytest

from filterd.pipeline import features


def _reference(data: bytes, scheme: str) -> tuple[list[bytes], list[bytes]]:
    """Words and char 3-5-grams, the slow and obvious way (char_wb: scikit-learn's analyser)."""
    if scheme == "alnum":
        words = re.findall(rb"[a-z0-9\x80-\xff]+", data)
        padded = words
    else:
        words = data.split()
        padded = [b" " + w + b" " for w in words]
    grams = [w[i:i + n] for n in features.CHAR_NGRAMS for w in padded for i in range(len(w) - n + 1)]
    return words, grams


@pytest.mark.parametrize("scheme", features.SCHEMES)
def test_vectorised_hashing_matches_reference(scheme: str) -> None:
    data = b" the cheap viagra pills, cheap! \xe9t\xe9 x1 a ab abc <font color=red> abcdef "
    words, chars = features.hash_ngrams(data, scheme)
    ref_words, ref_grams = _reference(data, scheme)
    assert len(words) == len(ref_words)
    assert len(chars) == len(ref_grams)
    # a word's bucket depends only on its bytes, not where it occurs
    alone = [int(features.hash_ngrams(w, scheme)[0][0]) for w in ref_words]
    assert sorted(alone) == sorted(words.tolist())


def test_schemes_differ_and_whitespace_kinds_are_one() -> None:
    assert (features.hash_ngrams(b"buy now!!!", "char_wb")[0].tolist()
            != features.hash_ngrams(b"buy now!!!", "alnum")[0].tolist())
    assert np.array_equal(features.hash_ngrams(b"a\tbc\nd", "char_wb")[1],
                          features.hash_ngrams(b"a bc d", "char_wb")[1])


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
    assert np.array_equal(features.load_buckets(tmp_path / "idf.npy"), idf)


def test_count_matches_numpy_unique() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 50, 5000):
        keys = rng.integers(0, 2 * features.BUCKETS, size).astype(np.int32)
        want = np.unique(keys, return_counts=True)
        got = features._count(keys.copy())
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
