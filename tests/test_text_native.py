"""The C extension of features.py against its numpy code: the same keys and features for any bytes.

The model was trained on the numpy code's features, so the extension must give them bit for
bit (tests/test_text_golden.py checks both on the whole corpus; here arbitrary bytes), and no
input may crash it: a failure costs one message, never the daemon. On CI the extension must
be built (the install step compiles it); locally a missing one skips these tests.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from filterd.pipeline import features
from tests.fixtures.prereq import missing
from tests.test_text_golden import numpy_path

MAX = features._MAX_BYTES

# bytes each scheme treats specially: whitespace, word bytes of either scheme, NUL, high bytes
_INTERESTING = b" \t\r\n\x0b\x0c\x00\x7f\x80\xe9\xffaz09AZ!<$-_"


@pytest.fixture(autouse=True)
def _native() -> None:
    if not features.NATIVE:
        missing("filterd.pipeline._ngrams is not built (pip install -e . with a C compiler)")


def _idf_tables() -> list[np.ndarray]:
    """The IDF as featurize is given it: float16 as shipped (tests/test_text_golden.py), and the
    scorer's float32 column of a two-column table; values spread like a real IDF's."""
    idf = (1.0 + 9.0 * np.random.default_rng(3).random(features.BUCKETS)).astype(np.float16)
    table = np.zeros((features.BUCKETS, 2), np.float32)
    table[:, 0] = idf
    return [idf, table[:, 0]]


_IDFS = _idf_tables()


def _same(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    """Equal dtypes and bits (NaN included)."""
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _both(data: bytes, scheme: str) -> None:
    """The C and numpy paths agree on featurize's keys, the bucket ids and the features."""
    keys, nw = features._keys(data, scheme)
    hashes, hnw = features._hashes(data, scheme)
    got = [features.featurize(data, idf, scheme) for idf in _IDFS]
    with numpy_path():
        want_keys, want_nw = features._keys(data, scheme)
        want_hashes, _ = features._hashes(data, scheme)
        want = [features.featurize(data, idf, scheme) for idf in _IDFS]
    assert (nw, hnw) == (want_nw, want_nw)
    assert keys.dtype == np.int32 and np.array_equal(keys, want_keys)
    assert hashes.dtype == np.uint64 and np.array_equal(hashes, want_hashes)
    for g, w in zip(got, want):
        _same(g, w)


def test_the_extension_is_built_and_in_use() -> None:
    assert features._native is not None and features._native.BITS == features.BITS
    assert features._native.MAX_GRAM == max(features.CHAR_NGRAMS)


# a short pattern repeated to a length around _MAX_BYTES (cheap to draw, unlike 64 KB at random)
_long = st.builds(lambda unit, n: (unit * (n // len(unit) + 1))[:n],
                  st.binary(min_size=1, max_size=12),
                  st.integers(MAX - 8, MAX + 8) | st.integers(0, 3 * MAX))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400)
       | st.lists(st.sampled_from(list(_INTERESTING)), max_size=400).map(bytes)
       | _long,
       scheme=st.sampled_from(features.SCHEMES))
@example(data=b"", scheme="char_wb")
@example(data=b"", scheme="alnum")
@example(data=b" \t\r\n\x0b\x0c" * 50, scheme="char_wb")
@example(data=b" \t\r\n\x0b\x0c" * 50, scheme="alnum")
@example(data=b"\x00" * 100, scheme="char_wb")
@example(data=bytes(range(256)) * 300, scheme="char_wb")
@example(data=bytes(range(256)) * 300, scheme="alnum")
def test_native_and_numpy_agree(data: bytes, scheme: str) -> None:
    _both(data, scheme)


@pytest.mark.parametrize("scheme", features.SCHEMES)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, MAX - 1, MAX, MAX + 1, 5 * MAX])
def test_random_bytes_of_every_awkward_length(size: int, scheme: str) -> None:
    rng = np.random.default_rng(size)
    _both(rng.integers(0, 256, size, dtype=np.uint8).tobytes(), scheme)
    _both(rng.choice(np.frombuffer(_INTERESTING, np.uint8), size).tobytes(), scheme)


def test_other_bytes_likes_give_what_bytes_give() -> None:
    data = b"Cheap  pills\t\xe9t\xe9 <font> now!!! " * 40
    want = features.featurize(data, np.ones(features.BUCKETS, np.float32))
    for like in (bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        got = features.featurize(like, np.ones(features.BUCKETS, np.float32))   # type: ignore[arg-type]
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("bad", ["text", None, 3, object()])
def test_bad_input_raises_as_the_numpy_path_does(bad: object) -> None:
    with pytest.raises(TypeError):
        features._keys(bad, "char_wb")   # type: ignore[arg-type]
    with numpy_path(), pytest.raises(TypeError):
        features._keys(bad, "char_wb")   # type: ignore[arg-type]


def test_the_c_function_refuses_what_it_cannot_read() -> None:
    keys = features._native.keys
    for args in [("text", True), (None, True), (b"ab",), (b"ab", True, 1), ()]:
        with pytest.raises(TypeError):
            keys(*args)
    with pytest.raises((TypeError, BufferError)):   # not contiguous
        keys(memoryview(b"abcdef")[::2], True)
    out, nw = keys(np.arange(10, dtype=np.int64), False)   # any contiguous buffer: its bytes
    assert nw == features._keys(np.arange(10, dtype=np.int64).tobytes(), "alnum")[1]


def test_threads_share_it() -> None:
    """The C loop runs without the GIL; concurrent calls each get their own keys."""
    rng = np.random.default_rng(7)
    docs = [rng.choice(np.frombuffer(_INTERESTING, np.uint8), 20_000).tobytes() for _ in range(16)]
    alone = [features._keys(d, "char_wb")[0] for d in docs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda d: features._keys(d, "char_wb")[0], docs * 4))
    assert all(np.array_equal(a, b) for a, b in zip(alone * 4, together))


# featurize's counting and weighting in C (_native.weights), against _weights_numpy

def _weights_both(keys: np.ndarray, idf: np.ndarray) -> None:
    got = features._weights(keys.copy(), idf)
    want = features._weights_numpy(keys.copy(), idf)
    _same(got[:2], want[:2])
    assert got[2] == want[2]


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(0, 2 * features.BUCKETS - 1), min_size=1, max_size=300)
       | st.lists(st.sampled_from([0, 1, features.BUCKETS - 1, features.BUCKETS, 2 * features.BUCKETS - 1]),
                  min_size=1, max_size=300),
       which=st.sampled_from([0, 1]))
def test_counts_and_weights_agree(keys: list[int], which: int) -> None:
    """Any keys (repeats, both groups, either edge of either), either IDF layout."""
    _weights_both(np.array(keys, np.int32), _IDFS[which])


@pytest.mark.parametrize("which", [0, 1])
def test_counts_of_every_size_agree(which: int) -> None:
    """Counts 1 .. the most a message can give one key: the C path looks 1 + log count up in a
    table that numpy computed, which must be numpy's log of each count, wherever it stands."""
    rng = np.random.default_rng(5)
    counts = np.concatenate((np.arange(1, 3000), rng.integers(1, features._MAX_KEYS, 40), [features._MAX_KEYS]))
    for part in np.array_split(rng.permutation(counts), 20):
        keys = np.repeat(np.sort(rng.choice(2 * features.BUCKETS, part.size, replace=False)), part)
        if keys.size <= features._MAX_KEYS:
            _weights_both(keys.astype(np.int32), _IDFS[which])
    table = features._LOG_COUNT
    assert table[1] == 1.0 and table.size == features._MAX_KEYS + 1
    for c in (1, 2, 3, 7, 100, 4097, features._MAX_KEYS):     # alone, not in a long array
        assert table[c] == (1.0 + np.log(np.array([c]), dtype=np.float32))[0]


def test_every_float16_converts_as_numpy_does() -> None:
    """The C code widens float16 IDF values itself: all 65,536 of them, NaN payloads too."""
    idf = np.tile(np.arange(1 << 16, dtype=np.uint16).view(np.float16), features.BUCKETS >> 16)
    keys = np.arange(1 << 16, dtype=np.int32) * 3     # buckets 0, 3, 6, ...: every value once
    ids, weights, nwords = features._native.weights(keys, idf, features._LOG_COUNT)
    ids = np.frombuffer(ids, np.int64)
    with np.errstate(invalid="ignore"):     # signalling NaNs
        want = idf[ids].astype(np.float32) * np.float32(1.0)  # count 1: 1 + log 1 = 1
    assert np.frombuffer(weights, np.float32).tobytes() == want.tobytes()
    assert nwords == np.count_nonzero(keys < features.BUCKETS)


def test_weights_refuses_what_it_cannot_count() -> None:
    weights, table = features._native.weights, features._LOG_COUNT
    idf = _IDFS[0]
    ok = np.array([1, 1, features.BUCKETS + 2], np.int32)
    assert np.frombuffer(weights(ok, idf, table)[0], np.int64).tolist() == [1, 2]
    for keys in (np.array([2, 1], np.int32), np.array([-1, 3], np.int32),
                 np.array([0, 2 * features.BUCKETS], np.int32), np.zeros(0, np.int32), b"abc"):
        with pytest.raises(ValueError):
            weights(keys, idf, table)
    with pytest.raises(ValueError):     # a count the table has no entry for
        weights(np.zeros(10, np.int32), idf, table[:5])
    for bad in (idf.astype(np.float64), idf[:-1], idf.reshape(2, -1), idf.astype(">f2"), b"x" * (4 << 20)):
        with pytest.raises(TypeError):
            weights(ok, bad, table)
    for args in [(ok, idf), (ok, idf, table, 1), ("text", idf, table), (ok, None, table)]:
        with pytest.raises(TypeError):
            weights(*args)


def test_featurize_falls_back_for_other_idf_tables() -> None:
    """float64 or short IDF tables are numpy's to weigh, as before the C path."""
    data = b"Cheap  pills\t\xe9t\xe9 <font> now!!! " * 40
    for idf in (_IDFS[0].astype(np.float64), _IDFS[0].astype(">f4")):
        got = features.featurize(data, idf)
        with numpy_path():
            want = features.featurize(data, idf)
        _same(got, want)


def test_threads_share_the_weights() -> None:
    """The counting runs without the GIL too; concurrent calls each get their own features."""
    rng = np.random.default_rng(8)
    docs = [rng.choice(np.frombuffer(_INTERESTING, np.uint8), 20_000).tobytes() for _ in range(16)]
    alone = [features.featurize(d, _IDFS[1]) for d in docs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda d: features.featurize(d, _IDFS[1]), docs * 4))
    for a, b in zip(alone * 4, together):
        _same(a, b)


# the scorer's wide branch: features.sparse_dot in C (_native.dot), against numpy's sum

def _column() -> np.ndarray:
    """A wide-weight column as the scorer holds it (column 1 of a float32 table), of either sign."""
    table = np.random.default_rng(9).standard_normal((features.BUCKETS, 2)).astype(np.float32)
    return table[:, 1]


_WIDE = _column()


def _dot_both(ids: np.ndarray, weights: np.ndarray) -> None:
    got = features.sparse_dot(ids, weights, _WIDE)
    with numpy_path():
        want = features.sparse_dot(ids, weights, _WIDE)
    assert np.float64(got).tobytes() == np.float64(want).tobytes()


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300) | st.integers(0, 70_000), seed=st.integers(0, 2 ** 32 - 1))
def test_sparse_dots_agree_to_the_bit(n: int, seed: int) -> None:
    """Any length (numpy's pairwise summation splits at 8 and 128 and halves above), weights
    spanning magnitudes so that the order of the additions shows."""
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)).astype(np.float32)
    _dot_both(rng.integers(0, features.BUCKETS, n), weights)


def test_sparse_dot_of_features_and_of_zeros() -> None:
    data = b"Cheap  pills\t\xe9t\xe9 <font> now!!! " * 400
    _dot_both(*features.featurize(data, _IDFS[1]))
    _dot_both(np.zeros(1, np.int64), np.zeros(1, np.float32))      # an empty message's features
    _dot_both(np.zeros(5, np.int64), np.full(5, -0.0, np.float32))
    _dot_both(np.zeros(0, np.int64), np.zeros(0, np.float32))


def test_dot_refuses_what_it_cannot_sum() -> None:
    dot = features._native.dot
    ids, weights = np.array([1, 2], np.int64), np.ones(2, np.float32)
    for bad_ids in (np.array([-1, 2], np.int64), np.array([1, features.BUCKETS], np.int64)):
        with pytest.raises(IndexError):
            dot(bad_ids, weights, _WIDE)
    with pytest.raises(ValueError):
        dot(ids, np.ones(3, np.float32), _WIDE)
    for table in (_WIDE.astype(np.float64), np.zeros((4, 4), np.float32), b"abcd"):
        with pytest.raises(TypeError):
            dot(ids, weights, table)
    for args in [(ids, weights), ("text", weights, _WIDE), (ids, weights, _WIDE, 1)]:
        with pytest.raises(TypeError):
            dot(*args)
