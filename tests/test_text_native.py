"""The C extension of features.py against its numpy code: the same keys for any bytes.

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


def _both(data: bytes, scheme: str) -> None:
    """The C and numpy paths agree on featurize's keys and on the bucket ids."""
    keys, nw = features._keys(data, scheme)
    hashes, hnw = features._hashes(data, scheme)
    with numpy_path():
        want_keys, want_nw = features._keys(data, scheme)
        want_hashes, _ = features._hashes(data, scheme)
    assert (nw, hnw) == (want_nw, want_nw)
    assert keys.dtype == np.int32 and np.array_equal(keys, want_keys)
    assert hashes.dtype == np.uint64 and np.array_equal(hashes, want_hashes)


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
