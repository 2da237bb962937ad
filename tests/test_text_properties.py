"""Property test: the text pipeline takes any bytes without raising and stays bounded."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.pipeline import features, text
from filterd.pipeline.vocab import Vocab

_VOCAB = Vocab(["<pad>", "<unk>", "<subject>", "<body>", "free"])
_IDF = np.ones(features.BUCKETS, np.float32)

_MIME_BITS = st.sampled_from([
    b"Subject: ", b"Content-Type: multipart/mixed; boundary=x\r\n", b"--x\r\n", b"--x--",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Type: text/html; charset=\"utf-7\"\r\n", b"=?utf-8?B?", b"?=", b"\r\n\r\n", b"\x00",
    b"<html><script>", b"=C3=", b"\xff\xfe", b"From ",
])
_MESSAGES = st.one_of(st.binary(max_size=3000),
                      st.lists(st.one_of(_MIME_BITS, st.binary(max_size=40)), max_size=60)
                      .map(b"".join))


@settings(max_examples=300, deadline=None)
@given(raw=_MESSAGES, cap=st.integers(min_value=1, max_value=300))
def test_any_bytes_give_a_bounded_token_list(raw: bytes, cap: int) -> None:
    analysis = text.analyze(raw, cap)
    assert 1 <= len(analysis.tokens) <= cap
    assert all(isinstance(t, str) and t for t in analysis.tokens)
    assert len(analysis.wide) <= 2 * text.WIDE_CAP + 1
    prepared = text.prepare(raw, _VOCAB, _IDF, cap)
    assert 1 <= prepared.ids.size <= cap
    assert prepared.ids.min() >= 0 and prepared.ids.max() < len(_VOCAB)
    assert prepared.feat_ids.size == prepared.feat_w.size >= 1
    assert np.all(np.isfinite(prepared.feat_w))


# The token pattern as the shipped model was trained with it, before its quantifiers were made
# possessive (text._TOKEN): the two must find the same tokens in any text.
_TRAINED_TOKEN = re.compile(
    rf"(?=[\w.+\-!$%?\u20ac\u00a3{text._CJK}])(?:"
    r"(?P<url>(?:https?://|www\.)[^\s<>\"')]+)"
    r"|(?P<email>[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8})"
    r"|(?P<num>\d+(?:[.,]\d+)*)"
    rf"|(?P<cjk>[{text._CJK}])"
    rf"|(?P<word>[^\W\d_{text._CJK}]+)"
    r"|(?P<punct>[!$%?\u20ac\u00a3]))"
)
_TOKEN_BITS = st.sampled_from(list("ab1_.,@-+ :/wh$!\u4e00\u00e9\u20ac") + [
    "http://", "www.", "a" * 63, "b" * 65, "1" * 70, "x.y", "@" + "c" * 64 + ".d"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(_TOKEN_BITS, max_size=40).map("".join))
def test_possessive_token_pattern_finds_the_trained_tokens(s: str) -> None:
    assert ([(m.span(), m.lastindex) for m in text._TOKEN.finditer(s)]
            == [(m.span(), m.lastindex) for m in _TRAINED_TOKEN.finditer(s)])
