"""Hashed word and character n-gram features for the network's wide (linear) branch.

The bytes that `text.analyze` hands us (lower-cased raw message plus decoded base64 text)
are cut into words and their character 3-, 4- and 5-grams (see SCHEMES), each hashed into
one of 2**BITS buckets. A message becomes a sparse vector: (1 + log count) × IDF per
bucket, words and characters each scaled to unit length. The IDF table is learnt on the
training split and shipped as `idf.npy`.

Everything is vectorised with numpy (no Python loop per n-gram): a polynomial rolling hash
over the byte array gives the hash of any span from two prefix sums, so all n-grams of a
length are hashed at once. uint64 arithmetic wraps, which is exactly the modulus we want.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BITS = 20
BUCKETS = 1 << BITS
CHAR_NGRAMS = (3, 4, 5)
_MAX_BYTES = 64 * 1024

_P = 0x100000001B3                          # odd, so it has an inverse modulo 2**64
_Q = pow(_P, -1, 1 << 64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(64 - BITS)
_SALT_WORD = np.uint64(0x51ED270B27B5A3C9)

SCHEMES = ("char_wb", "alnum")   # how bytes are cut into words; the artifact records which

# "char_wb" (the default): whitespace separates words and every other byte (letters, digits,
# punctuation, markup) is part of one, as in scikit-learn's char_wb analyser, with a space
# standing for the word boundary in the char n-grams: spam hides in "!!!", "$$$" and "<font".
_SPACE = np.zeros(256, dtype=bool)
_SPACE[np.frombuffer(b" \t\r\n\x0b\x0c", np.uint8)] = True

# "alnum" (first models): word bytes are ASCII letters and digits and every byte >= 0x80.
_WORD = np.zeros(256, dtype=bool)
_WORD[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", np.uint8)] = True
_WORD[128:] = True


def _powers(base: int, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)   # wraps modulo 2**64


_PPOW = _powers(_P, _MAX_BYTES + 1)
_QPOW = _powers(_Q, _MAX_BYTES + 1)


def _bucket(h: np.ndarray, salt: np.uint64) -> np.ndarray:
    """Spread span hashes over the buckets: a multiplicative hash, top BITS bits (in place)."""
    h += salt
    h *= _MIX
    h ^= h >> np.uint64(29)
    h *= _MIX
    h >>= _SHIFT
    return h.astype(np.int64)


def _rolling(a: np.ndarray, wb: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gap, gaps, prefix) of the byte array `a`: which bytes separate words, their running
    count, and the prefix sums of the rolling hash (hash_ngrams and first_spans share them)."""
    n = a.size
    gap = _SPACE[a] if wb else ~_WORD[a]            # bytes that separate words
    with np.errstate(over="ignore"):
        c = a.astype(np.uint64)
        c += np.uint64(1)
        if wb:      # every whitespace byte counts as one space: "a\tb" and "a b" share n-grams
            c[gap] = np.uint64(33)
        c *= _QPOW[:n]
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(c, out=prefix[1:])
    gaps = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(gap, out=gaps[1:])
    return gap, gaps, prefix


def _words(gap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of the words (runs of non-gap bytes)."""
    edges = np.diff(np.concatenate(([0], (~gap).view(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _keep(gaps: np.ndarray, size: int, m: int, wb: bool) -> np.ndarray:
    """Which of the m character n-grams of `size` bytes are features."""
    if wb:      # no gap strictly inside; one at either end marks the word boundary
        return gaps[size - 1: size - 1 + m] == gaps[1: 1 + m]
    return gaps[size: size + m] == gaps[:m]         # entirely inside one word


def hash_ngrams(data: bytes, scheme: str = "char_wb") -> tuple[np.ndarray, np.ndarray]:
    """Bucket ids (with repeats) of the words and of their character n-grams."""
    a = np.frombuffer(data[:_MAX_BYTES], dtype=np.uint8)
    n = a.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    wb = scheme == "char_wb"
    gap, gaps, prefix = _rolling(a, wb)
    with np.errstate(over="ignore"):
        starts, ends = _words(gap)
        # hash of a[s:e] = (prefix[e] - prefix[s]) * P**s = sum c[j] * Q**(j - s)
        words = _bucket((prefix[ends] - prefix[starts]) * _PPOW[starts], _SALT_WORD)
        grams = []
        for size in CHAR_NGRAMS:
            m = n - size + 1                        # n-grams start at 0 .. m-1
            if m <= 0:
                continue
            keep = _keep(gaps, size, m, wb)
            # contiguous slices, then keep: cheaper than gathering by index
            h = prefix[size: size + m] - prefix[:m]
            h *= _PPOW[:m]
            grams.append(_bucket(h[keep], np.uint64(size)))
    return words, np.concatenate(grams) if grams else np.zeros(0, np.int64)


def first_spans(data: bytes, words: np.ndarray, chars: np.ndarray,
                scheme: str = "char_wb") -> tuple[dict[int, bytes], dict[int, bytes]]:
    """For the given word buckets and char n-gram buckets, the first span of `data` that
    hashes there: what an explanation calls a feature. Same hash as hash_ngrams; slower
    (it keeps positions), so it is only run for the few buckets an explanation lists."""
    a = np.frombuffer(data[:_MAX_BYTES], dtype=np.uint8)
    n = a.size
    found_words: dict[int, bytes] = {}
    found_chars: dict[int, bytes] = {}
    if n == 0:
        return found_words, found_chars
    wb = scheme == "char_wb"
    gap, gaps, prefix = _rolling(a, wb)
    with np.errstate(over="ignore"):
        starts, ends = _words(gap)
        buckets = _bucket((prefix[ends] - prefix[starts]) * _PPOW[starts], _SALT_WORD)
        _first(buckets, words, starts, ends, a, found_words)
        for size in CHAR_NGRAMS:
            m = n - size + 1
            if m <= 0:
                continue
            at = np.flatnonzero(_keep(gaps, size, m, wb))
            buckets = _bucket((prefix[at + size] - prefix[at]) * _PPOW[at], np.uint64(size))
            _first(buckets, chars, at, at + size, a, found_chars)
    return found_words, found_chars


def _first(buckets: np.ndarray, wanted: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           a: np.ndarray, out: dict[int, bytes]) -> None:
    """Record in `out` the first span of each wanted bucket not found yet."""
    hits = np.flatnonzero(np.isin(buckets, wanted))
    for i in hits.tolist():
        bucket = int(buckets[i])
        if bucket not in out:
            out[bucket] = a[starts[i]: ends[i]].tobytes()


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys and their counts: np.unique(return_counts=True), about twice as fast."""
    keys.sort()
    first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[first].astype(np.int64), np.diff(np.append(first, keys.size))


def featurize(data: bytes, idf: np.ndarray,
              scheme: str = "char_wb") -> tuple[np.ndarray, np.ndarray]:
    """Sparse feature vector of one message: (bucket ids int64, weights float32)."""
    words, chars = hash_ngrams(data, scheme)
    if words.size + chars.size == 0:
        return np.zeros(1, np.int64), np.zeros(1, np.float32)
    # One sort for both groups: char buckets are offset by BUCKETS to keep them apart.
    keys, counts = _count(np.concatenate((words, chars + BUCKETS)).astype(np.int32))
    ids = keys & (BUCKETS - 1)
    weights = (1.0 + np.log(counts, dtype=np.float32)) * idf[ids]
    split = int(np.searchsorted(keys, BUCKETS))
    for part in (weights[:split], weights[split:]):     # each group to unit length
        norm = float(np.sqrt(np.dot(part, part)))
        if norm > 0:
            part /= norm
    return ids, weights.astype(np.float32, copy=False)


def document_frequency(docs: list[bytes], scheme: str = "char_wb") -> np.ndarray:
    """How many of `docs` contain each bucket (the input of `fit_idf`)."""
    df = np.zeros(BUCKETS, dtype=np.int64)
    for data in docs:
        words, chars = hash_ngrams(data, scheme)
        df[np.unique(np.concatenate((words, chars)))] += 1
    return df


def fit_idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Smoothed IDF, rounded through float16 because that is how it ships."""
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    return idf.astype(np.float16).astype(np.float32)


def save_idf(path: Path, idf: np.ndarray) -> None:
    np.save(path, idf.astype(np.float16), allow_pickle=False)


def load_buckets(path: Path) -> np.ndarray:
    """One value per bucket (idf.npy, wide.npy), never unpickling anything.

    Kept as stored: the IDF table stays float16 (2 MB a worker, not 4), and `featurize`
    multiplies it into float32 weights, which gives exactly the values a float32 copy would.
    """
    values = np.load(path, allow_pickle=False)
    if values.shape != (BUCKETS,) or values.dtype not in (np.float16, np.float32):
        raise ValueError(f"{path}: expected {BUCKETS} float16 or float32 values, found "
                         f"{values.dtype} of shape {values.shape}")
    return values
