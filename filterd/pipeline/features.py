"""Hashed word and character n-gram features for the network's wide (linear) branch.

The bytes that `text.analyze` hands us (lower-cased raw message plus decoded base64 text)
are cut into words and their character 3-, 4- and 5-grams (see SCHEMES), each hashed into
one of 2**BITS buckets. A message becomes a sparse vector: (1 + log count) × IDF per
bucket, words and characters each scaled to unit length. The IDF table is learnt on the
training split and shipped as `idf.npy`.

Everything is vectorised with numpy (no Python loop per n-gram): a polynomial rolling hash
over the byte array gives the hash of any span from two prefix sums, so all n-grams of a
length are hashed at once. uint64 arithmetic wraps, which is exactly the modulus we want.

The optional C extension `_ngrams` (setup.py; `pip install` builds it where there is a C
compiler) computes the same keys bit for bit, without numpy's temporary arrays: about 3.5
times faster on a 4 KB message; and, once numpy has sorted them, the distinct keys' counts and
weights, to the bit (_weights): featurize 97 -> 61 us a 4 KB message. NATIVE says whether it is
in use. The numpy code stays, as the fallback and as the reference that tests hold the
extension to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    import filterd.pipeline._ngrams as _native
except ImportError:             # built without a C compiler: the numpy code below instead
    _native = None

BITS = 20
BUCKETS = 1 << BITS
CHAR_NGRAMS = (3, 4, 5)
_MAX_BYTES = 64 * 1024

_P = 0x100000001B3                          # odd, so it has an inverse modulo 2**64
_Q = pow(_P, -1, 1 << 64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(64 - BITS)
_SALT_WORD = np.uint64(0x51ED270B27B5A3C9)

NATIVE = _native is not None    # for the daemon's start-up line; tests switch via _native

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


# Per-byte tables for bytes.translate, far cheaper than numpy fancy indexing on a few KB:
# whether a byte is a word byte (1) or separates words (0), and for "char_wb" the byte with
# every whitespace byte made a space, so "a\tb" and "a b" share n-grams.
_IS_WORD = {True: bytes(int(not _SPACE[b]) for b in range(256)),
            False: bytes(int(_WORD[b]) for b in range(256))}
_AS_SPACE = bytes(32 if _SPACE[b] else b for b in range(256))


def _bucket(h: np.ndarray, salt: np.uint64 | None = None) -> np.ndarray:
    """Spread span hashes over the buckets: a multiplicative hash, top BITS bits (in place).
    Without `salt` the caller has added it already (_hashes salts each group in place)."""
    if salt is not None:
        h += salt
    h *= _MIX
    h ^= h >> np.uint64(29)
    h *= _MIX
    h >>= _SHIFT
    return h


def _rolling(data: bytes, wb: bool) -> tuple[np.ndarray, np.ndarray]:
    """(word, prefix) of `data`: which bytes belong to words, with a non-word byte added at
    either end, and the prefix sums of the rolling hash (hash_ngrams and first_spans share them)."""
    n = len(data)
    word = np.frombuffer((b" " + data + b" ").translate(_IS_WORD[wb]), dtype=bool)
    codes = np.frombuffer(data.translate(_AS_SPACE) if wb else data, dtype=np.uint8)
    prefix = np.empty(n + 1, dtype=np.uint64)
    prefix[0] = 0
    with np.errstate(over="ignore"):
        np.add(codes, np.uint64(1), out=prefix[1:])     # byte + 1: a NUL byte still counts
        np.multiply(prefix[1:], _QPOW[:n], out=prefix[1:])
        np.cumsum(prefix[1:], out=prefix[1:])
    return word, prefix


def _words(word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of the words (runs of word bytes; `word` is padded either end)."""
    edges = np.flatnonzero(word[1:] != word[:-1])   # start, end, start, end, ...
    return edges[0::2], edges[1::2]


def _keeps(word: np.ndarray, wb: bool) -> dict[int, np.ndarray]:
    """For each n-gram size, which of the n-grams starting at 0, 1, ... are features.

    char_wb: no gap strictly inside (one at either end marks the word boundary); alnum:
    no gap at all. `run` is "the next k bytes from here are word bytes", grown a byte at a time.
    """
    word = word[1:-1]
    skip = 1 if wb else 0                           # bytes at the front that may be a gap
    out: dict[int, np.ndarray] = {}
    run = word[skip:]
    for k in range(1, max(CHAR_NGRAMS) - 2 * skip + 1):
        if k > 1:
            run = run[:-1] & word[skip + k - 1:]
        size = k + 2 * skip
        if size in CHAR_NGRAMS and word.size - size + 1 > 0:
            out[size] = run[: word.size - size + 1]
    return out


def _keys(data: bytes, scheme: str) -> tuple[np.ndarray, int]:
    """featurize's sort keys (int32, with repeats): the word buckets, then the char n-gram
    buckets + BUCKETS; and how many words lead. The C extension's if built, else numpy's."""
    data = bytes(data[:_MAX_BYTES])
    if _native is not None:
        keys, nw = _native.keys(data, scheme == "char_wb")
        return np.frombuffer(keys, dtype=np.int32), nw    # writable: a bytearray
    h, nw = _hashes_numpy(data, scheme)
    out = h.astype(np.int32)
    out[nw:] += BUCKETS
    return out, nw


def _hashes(data: bytes, scheme: str) -> tuple[np.ndarray, int]:
    """Bucket ids (uint64, with repeats) of the words, then of their character n-grams,
    and how many words lead."""
    if _native is None:
        return _hashes_numpy(bytes(data[:_MAX_BYTES]), scheme)
    keys, nw = _keys(data, scheme)
    h = keys.astype(np.uint64)
    h[nw:] -= np.uint64(BUCKETS)
    return h, nw


def _hashes_numpy(data: bytes, scheme: str) -> tuple[np.ndarray, int]:
    """_hashes in numpy, of at most _MAX_BYTES bytes: every group hashed and mixed in one buffer."""
    if not data:
        return np.zeros(0, np.uint64), 0
    wb = scheme == "char_wb"
    word, prefix = _rolling(data, wb)
    starts, ends = _words(word)
    keeps = _keeps(word, wb)
    nw = starts.size
    buf = np.empty(nw + sum(k.size for k in keeps.values()), dtype=np.uint64)
    keep = np.empty(buf.size, dtype=bool)
    with np.errstate(over="ignore"):
        # hash of a[s:e] = (prefix[e] - prefix[s]) * P**s = sum c[j] * Q**(j - s)
        words = buf[:nw]
        np.subtract(prefix[ends], prefix[starts], out=words)
        words *= _PPOW[starts]
        words += _SALT_WORD
        keep[:nw] = True
        at = nw
        for size, kept in keeps.items():
            m = kept.size                           # n-grams start at 0 .. m-1
            # contiguous slices, then one keep for all sizes: cheaper than gathering by index
            h = buf[at: at + m]
            np.subtract(prefix[size: size + m], prefix[:m], out=h)
            h *= _PPOW[:m]
            h += np.uint64(size)
            keep[at: at + m] = kept
            at += m
        return _bucket(buf[keep]), nw


def hash_ngrams(data: bytes, scheme: str = "char_wb") -> tuple[np.ndarray, np.ndarray]:
    """Bucket ids (with repeats) of the words and of their character n-grams."""
    h, nw = _hashes(data, scheme)
    h = h.astype(np.int64)
    return h[:nw], h[nw:]


def first_spans(data: bytes, words: np.ndarray, chars: np.ndarray,
                scheme: str = "char_wb") -> tuple[dict[int, bytes], dict[int, bytes]]:
    """For the given word buckets and char n-gram buckets, the first span of `data` that
    hashes there: what an explanation calls a feature. Same hash as hash_ngrams; slower
    (it keeps positions), so it is only run for the few buckets an explanation lists."""
    data = bytes(data[:_MAX_BYTES])
    a = np.frombuffer(data, dtype=np.uint8)
    found_words: dict[int, bytes] = {}
    found_chars: dict[int, bytes] = {}
    if a.size == 0:
        return found_words, found_chars
    wb = scheme == "char_wb"
    word, prefix = _rolling(data, wb)
    with np.errstate(over="ignore"):
        starts, ends = _words(word)
        buckets = _bucket((prefix[ends] - prefix[starts]) * _PPOW[starts], _SALT_WORD)
        _first(buckets, words, starts, ends, a, found_words)
        for size, kept in _keeps(word, wb).items():
            at = np.flatnonzero(kept)
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
    new = np.empty(keys.size, dtype=bool)
    new[0] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    first = np.flatnonzero(new)
    counts = np.empty(first.size, dtype=np.int64)
    np.subtract(first[1:], first[:-1], out=counts[:-1])
    counts[-1] = keys.size - first[-1]
    return keys[first].astype(np.int64), counts


def _weights_numpy(keys: np.ndarray, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(bucket ids, (1 + log count) * idf, how many are words) of the distinct keys."""
    keys, counts = _count(keys)
    ids = keys & (BUCKETS - 1)
    weights = (1.0 + np.log(counts, dtype=np.float32)) * idf[ids]
    return ids, weights, int(np.searchsorted(keys, BUCKETS))


# 1 + log count for every count a key can have (float32, as numpy computes it: numpy's log is
# not C's logf to the last bit), for the C extension to look up.
_MAX_KEYS = _MAX_BYTES // 2 + 1 + 3 * _MAX_BYTES
_LOG_COUNT = np.zeros(_MAX_KEYS + 1, dtype=np.float32)
_LOG_COUNT[1:] = 1.0 + np.log(np.arange(1, _MAX_KEYS + 1), dtype=np.float32)


def _weights(keys: np.ndarray, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """_weights_numpy, bit for bit; by the C extension where it is built and idf is a float16
    or float32 table (as shipped, or the scorer's float32 column): after numpy's sort (SIMD,
    as fast as a radix sort in C), one pass over the keys and one over the distinct ones,
    where numpy makes a dozen passes with temporaries and waits on each idf cache miss in turn."""
    if (_native is None or idf.ndim != 1 or idf.size < BUCKETS
            or idf.dtype not in (np.float16, np.float32)):
        return _weights_numpy(keys, idf)
    keys.sort()
    ids, weights, nwords = _native.weights(keys, idf, _LOG_COUNT)
    return np.frombuffer(ids, dtype=np.int64), np.frombuffer(weights, dtype=np.float32), nwords


def featurize(data: bytes, idf: np.ndarray,
              scheme: str = "char_wb") -> tuple[np.ndarray, np.ndarray]:
    """Sparse feature vector of one message: (bucket ids int64, weights float32)."""
    # One sort for both groups: char buckets are offset by BUCKETS to keep them apart.
    keys, _ = _keys(data, scheme)
    if keys.size == 0:
        return np.zeros(1, np.int64), np.zeros(1, np.float32)
    ids, weights, split = _weights(keys, idf)
    for part in (weights[:split], weights[split:]):     # each group to unit length
        # Squares in float64 (exact) summed by numpy (pairwise), never np.dot: a float32 dot
        # is BLAS's, whose kernel (AVX2, AVX-512) and threads change its last bits by CPU.
        norm = float(np.sqrt(np.square(part, dtype=np.float64).sum()))
        if norm > 0:
            part /= norm
    return ids, weights.astype(np.float32, copy=False)


def sparse_dot(ids: np.ndarray, weights: np.ndarray, table: np.ndarray) -> float:
    """sum(table[ids] * weights) in float64, as numpy sums it (pairwise), by the C extension
    where it is built: the scorer's wide branch, 24 -> 9 us a 4 KB message (no temporaries,
    the table's cache lines asked for ahead)."""
    if _native is None or table.ndim != 1 or table.dtype != np.float32 or weights.dtype != np.float32:
        return float((table[ids].astype(np.float64) * weights).sum())
    return float(_native.dot(np.ascontiguousarray(ids, np.int64), np.ascontiguousarray(weights), table))


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

    Kept as stored (the IDF table is float16); the scorer lays the two tables side by side
    as float32, which gives `featurize` exactly the weights the float16 table gives.
    """
    values = np.load(path, allow_pickle=False)
    if values.shape != (BUCKETS,) or values.dtype not in (np.float16, np.float32):
        raise ValueError(f"{path}: expected {BUCKETS} float16 or float32 values, found "
                         f"{values.dtype} of shape {values.shape}")
    return values
