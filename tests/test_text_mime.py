"""Text pipeline on hand-written tricky MIME (tests/data/mime/) and on hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filterd.pipeline import text

DATA = Path(__file__).parent / "data" / "mime"
EXPECTED = {k: v for k, v in json.loads((DATA / "expected.json").read_text()).items()
            if not k.startswith("_")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tokens_of_tricky_mime(name: str) -> None:
    tokens = text.analyze((DATA / name).read_bytes()).tokens
    for token in EXPECTED[name]["present"]:
        assert token in tokens, f"{name}: {token!r} missing from {tokens}"
    for token in EXPECTED[name]["absent"]:
        assert token not in tokens, f"{name}: {token!r} should not be in {tokens}"


def test_every_fixture_has_expectations() -> None:
    assert {p.name for p in DATA.glob("*.eml")} == set(EXPECTED)


def test_header_facts_come_first_and_body_after() -> None:
    tokens = text.analyze((DATA / "nested_multipart.eml").read_bytes()).tokens
    assert tokens[0] == "<subject>"
    assert tokens.index("<body>") < tokens.index("plainpartword")


def test_base64_text_reaches_wide_features() -> None:
    raw = (b"Subject: b64\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"SGlkZGVuV29yZCBpbiBiYXNlNjQ=\r\n")
    analysis = text.analyze(raw)
    assert "hiddenword" in analysis.tokens
    assert b"hiddenword in base64" in analysis.wide


def test_token_cap() -> None:
    raw = b"Subject: long\r\n\r\n" + b"word " * 10000
    for cap in (1, 40, 256):
        assert len(text.analyze(raw, cap).tokens) == cap


def test_deeply_nested_multipart_is_bounded() -> None:
    depth = 100
    head = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                    for i in range(depth))
    raw = (b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + head
           + b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeepestword\r\n" % depth)
    tokens = text.analyze(raw).tokens
    assert "<badmultipart>" in tokens          # we stopped following at MAX_DEPTH
    assert "deepestword" not in tokens


def test_huge_message_reads_only_the_start() -> None:
    raw = b"Subject: huge\r\n\r\nfirstword " + b"A" * (30 * 1024 * 1024) + b" lastword"
    analysis = text.analyze(raw)
    assert "firstword" in analysis.tokens and "lastword" not in analysis.tokens
    assert len(analysis.wide) <= 2 * text.WIDE_CAP


def test_many_parts_are_capped() -> None:
    parts = b"".join(b"--x\r\nContent-Type: text/plain\r\n\r\npart%d\r\n" % i for i in range(5000))
    raw = b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n" + parts + b"--x--"
    tokens = text.analyze(raw, 100000).tokens
    assert 0 < tokens.count("part") <= text.MAX_PARTS


def test_encoded_words_with_bad_charset_and_bad_base64() -> None:
    assert text.decode_header("=?x-bogus?B?aGVsbG8=?=") == "hello"
    assert text.decode_header("=?utf-8?B?####?=") in ("", "####")
    assert text.decode_header("=?utf-8?Q?caf=C3=A9_au_lait?=") == "café au lait"


def test_html_hidden_parts_and_unclosed_openers() -> None:
    assert text.html_to_text("a<script>x</script >b<STYLE a>y</style>c<!-- z -->d").split() == \
        ["a", "b", "c", "d"]
    # an opener without its closer hides nothing; later elements are still dropped
    assert text.html_to_text("<script>keep <!-- gone --> me").split() == ["keep", "me"]
    # hostile: thousands of unclosed openers (this once took seconds: quadratic regex)
    assert text.html_to_text("<script>" * 20000 + "tail").split() == ["tail"]
    assert text.html_to_text("<style>" * 20000 + "<!--" * 20000 + "-->tail").split() == ["tail"]


@pytest.mark.parametrize("raw", [
    b"X: a" + b" \t" * 30000 + b"x\r\n\r\nbodyword",                # once quadratic: header value
    b"Content-Type: text/plain;" + b" " * 60000 + b"x\r\n\r\nbodyword",
    b"\r\n\r\nbodyword " + b"_" * 60000,                              # once quadratic: addresses
    b"Content-Type: text/html\r\n\r\nbodyword " + b"<" * 60000,
])
def test_pathological_repetitions_still_parse(raw: bytes) -> None:
    assert "bodyword" in text.analyze(raw).tokens
