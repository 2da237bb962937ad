"""The text pipeline's outputs on the whole corpus, pinned by checksums.

The model was trained on exactly these tokens and features, so a speed-up of text.py or
features.py must not change a single one. The checksums below are those of pipeline
version 2 (text.PIPELINE_VERSION: changing them changes what the model reads, which takes a
new version and a retrained model), its unit-length scaling summing in float64 without BLAS
(so they hold on every CPU: BLAS's float32 dot differs in the last bits between its AVX2 and
AVX-512 kernels). The corpus data itself is not committed, only sha256 digests over the concatenated outputs.

The IDF table and the vocabulary are built here, deterministically, rather than taken from
model_artifacts/, so that a retrained model does not move the checksums.

features.py hashes with its C extension where it is built and with numpy where not; the
featurize checks (char_wb, alnum, truncated) run both ways over the same messages and must
give the same digests. ids_128 (text.prepare, whose features are char_wb's) runs the default way.
char_wb runs once more with the IDF laid out as the scorer gives it (a float32 column of a
two-column table, which the C code reads in place): the same digest again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from export.corpus import iter_corpus
from filterd.pipeline import features, text
from filterd.pipeline.vocab import Vocab
from tests.fixtures.prereq import missing

pytestmark = [pytest.mark.corpus]

# sha256 hex digests of the concatenated outputs, by check (see _digests)
GOLDEN = {
    "messages": "907653a5ff4a0b04e6c124106f978dfaf34fb13a2b9bb3499b0c98174e4032b1",
    "tokens_128": "4df36451ee2bdcf120268c4d3d313beee11d20daf5baadcd8f0b453c5c0e3b8d",
    "wide": "30a2aa89614c305c2f0dfa4642e202455658a0c6f93e94c1a6ac17cbf2d96c25",
    "char_wb": "0511fd4635c9f01f4b7e0e072e272a2462b83f72655e2f50365409246208a9fd",
    "ids_128": "46867e1ed2f8e0755578a3f669bce8390aa5d7a08f37f52d34e5cb5e3520dbe4",
    "tokens_4096": "64d8e022c29d8897d0bd6443f7181c5ff671ae153734886fef29e91e40ba3d01",
    "alnum": "750c9e8db10b486ff35615ae0546248e1ece589b487ddfdffeabc0184e044e26",
    "truncated": "de14266b814d005bee6892d8407668602e7938a250b18da10f4a62c7034ff6c0",
}


# the checks that featurize alone decides, and so run by the numpy path as well
FEATURE_CHECKS = ("char_wb", "alnum", "truncated")


@contextmanager
def numpy_path() -> Iterator[None]:
    """features.py as it runs where its C extension was not built."""
    native = features._native
    features._native = None
    try:
        yield
    finally:
        features._native = native


def _idf() -> np.ndarray:
    """A fixed float16 table, as idf.npy ships, with values spread like a real IDF."""
    rng = np.random.default_rng(12)
    return (1.0 + 9.0 * rng.random(features.BUCKETS)).astype(np.float16)


def _scorer_layout(idf: np.ndarray) -> np.ndarray:
    """The same values as Scorer holds them: column 0 of a (buckets, 2) float32 table."""
    table = np.zeros((idf.size, 2), np.float32)
    table[:, 0] = idf
    return table[:, 0]


def _update(h: hashlib._Hash, *arrays: np.ndarray) -> None:
    for a in arrays:
        h.update(str(a.dtype).encode() + len(a).to_bytes(8, "little"))
        h.update(np.ascontiguousarray(a).tobytes())


def _tokens(h: hashlib._Hash, tokens: list[str]) -> None:
    h.update("\x00".join(tokens).encode("utf-8", "surrogatepass") + b"\x01")


def _featurize(hs: list[dict[str, hashlib._Hash]], name: str, data: bytes, idf: np.ndarray,
               scheme: str) -> None:
    """featurize into check `name`: the default way into hs[0], and into hs[1] (if any) by numpy."""
    _update(hs[0][name], *features.featurize(data, idf, scheme))
    if len(hs) > 1:
        with numpy_path():
            _update(hs[1][name], *features.featurize(data, idf, scheme))


def _digests(raws: Iterator[bytes]) -> tuple[dict[str, str], dict[str, str], str]:
    """Every message through every stage; some checks on a subset to stay fast. Returns the
    digests, those of FEATURE_CHECKS by the numpy path (empty if that is the default), and
    char_wb's with the scorer's IDF layout."""
    idf = _idf()
    column, by_column = _scorer_layout(idf), hashlib.sha256()
    h = {name: hashlib.sha256() for name in GOLDEN}
    hs = [h, {name: hashlib.sha256() for name in FEATURE_CHECKS}] if features.NATIVE else [h]
    vocab: Vocab | None = None
    first: list[list[str]] = []
    for i, raw in enumerate(raws):
        h["messages"].update(hashlib.sha256(raw).digest())
        analysis = text.analyze(raw, 128)
        _tokens(h["tokens_128"], analysis.tokens)
        h["wide"].update(len(analysis.wide).to_bytes(8, "little") + analysis.wide)
        _featurize(hs, "char_wb", analysis.wide, idf, "char_wb")
        _update(by_column, *features.featurize(analysis.wide, column, "char_wb"))
        if i < 300:     # the vocabulary: tokens of the first 300 messages
            first.append(analysis.tokens)
            continue
        if vocab is None:
            vocab = Vocab.build(first, 4000, min_count=1)
        _update(h["ids_128"], *text.prepare(raw, vocab, idf, 128)[:3])   # ids, feat_ids, feat_w
        if i % 4 == 0:
            _tokens(h["tokens_4096"], text.analyze(raw, 4096).tokens)
        if i % 5 == 0:
            _featurize(hs, "alnum", analysis.wide, idf, "alnum")
        if i % 7 == 0:      # cut anywhere: headers, boundaries and encodings left unfinished
            for cut in (len(raw) // 3, len(raw) // 2 + 1, 700):
                part = text.analyze(raw[:cut], 128)
                for d in hs:
                    _tokens(d["truncated"], part.tokens)
                _featurize(hs, "truncated", part.wide, idf, "char_wb")
    return ({name: d.hexdigest() for name, d in h.items()},
            {name: d.hexdigest() for name, d in hs[-1].items()} if len(hs) > 1 else {},
            by_column.hexdigest())


def test_pipeline_outputs_match_the_golden_checksums(corpus_dir: Path) -> None:
    got, by_numpy, by_column = _digests(sample.raw for sample in iter_corpus(corpus_dir))
    if got["messages"] != GOLDEN["messages"]:
        missing("a different corpus: the golden checksums are of the shipped one")
    assert got == GOLDEN
    assert by_column == GOLDEN["char_wb"]
    if features.NATIVE:     # the fallback too (tests/test_text_native.py fails CI without the C one)
        assert by_numpy == {name: GOLDEN[name] for name in FEATURE_CHECKS}
