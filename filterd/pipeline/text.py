"""The one text pipeline: raw RFC 822 bytes → tokens for the GRU and bytes for the hashed features.

Training (export/) imports this module, so what the network saw in training is exactly
what the daemon feeds it. It never raises on bad mail and is bounded on hostile input:
it looks at the first MAX_SCAN bytes only, walks at most MAX_PARTS MIME parts to a depth
of MAX_DEPTH, and decodes at most TEXT_CAP characters of text.

We parse MIME ourselves with a few regular expressions instead of the `email` package:
the stdlib parser costs about 1 ms for a 4 KB message, which alone would eat the
throughput budget of the daemon (issue 6), and we only need the text, not a faithful tree.
"""

from __future__ import annotations

import binascii
import codecs
import html
import logging
import re
from typing import NamedTuple

import numpy as np

from filterd import metrics
from filterd.pipeline.features import featurize
from filterd.pipeline.vocab import Vocab

log = logging.getLogger(__name__)

PIPELINE_VERSION = 2        # bump when tokens change; the manifest records it, the scorer checks it

MAX_SCAN = 512 * 1024       # bytes of a message we look at, whatever its size
MAX_HEADER = 64 * 1024      # bytes of one header block
MAX_PARTS = 64              # MIME parts walked per message
MAX_DEPTH = 12              # multipart nesting we follow
TEXT_CAP = 16 * 1024        # decoded characters kept from the whole body
WIDE_CAP = 24 * 1024        # bytes handed to the hashed n-gram features
DEFAULT_MAX_TOKENS = 256

# The blank line ending a header block, \r?\n\r?\n, found from its first \n (a pattern that
# starts with a literal is searched for with a fast scan; one that starts with \r? is tried
# at every byte) and widened over a \r before it. Likewise folds: \r?\n[ \t]+ as branches.
_HEAD_END = re.compile(rb"\n\r?\n")
_FOLD = re.compile(rb"\r\n[ \t]+|\n[ \t]+")
# greedy value, trailing blanks stripped in Python: a lazy `(.*?)[ \t]*$` is quadratic
_HEADER_LINE = re.compile(rb"^([!-9;-~]{1,76})[ \t]*:[ \t]*(.*)$", re.M)
# Header fields the final delivery adds (RFC 5321 4.4 Return-Path; Postfix's Delivered-To and
# X-Original-To): saved mailboxes, and so every training corpus, have them; the mail a
# filter sees before delivery (proxy, milter) does not. Neither half may learn from them.
_DELIVERY_FIELD = re.compile(rb"^(?:return-path|delivered-to|x-original-to)[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*",
                             re.I | re.M)
_HEADER_LINE_STR = re.compile(r"^([!-9;-~]{1,76})[ \t]*:[ \t]*(.*)$", re.M)
_CTYPE = re.compile(r"^\s*([\w.+-]+/[\w.+-]+)", re.A)
_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.A)
_ENCODED_WORD = re.compile(r"=\?([\w.:-]+)\?([bBqQ])\?([^?\s]*)\?=")
_DOMAIN = re.compile(r"@\[?([\w.-]+)")
_RCVD_FROM = re.compile(r"from\s+([\w.-]+)", re.I)
_ANGLE_ADDR = re.compile(r"<([^<>]*)>")
_HIDDEN_OPEN = re.compile(r"<(script|style)\b|<!--", re.I)
_HIDDEN_CLOSE = {"script": re.compile(r"</script\s*>", re.I),
                 "style": re.compile(r"</style\s*>", re.I), None: re.compile(r"-->")}
_HTML_TAG = re.compile(r"<[^>]{0,2000}>")   # bounded: at most 2000 characters per "<"
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# The lookahead lists every character a token can start with (the CJK ranges too: U+30FB
# is CJK but not \w), so the scanner skips other positions without trying each alternative.
# Possessive quantifiers (++, {m,n}+; Python 3.11) never give back what they matched: none of
# these runs can end in the character that follows it ("@", ".", "[.,]"), so backtracking
# could never find another match, only spend time. The same tokens, a fifth less time: an
# address branch that fails now fails after one scan of the word instead of one per letter.
_TOKEN = re.compile(
    rf"(?=[\w.+\-!$%?\u20ac\u00a3{_CJK}])(?:"
    r"(?P<url>(?:https?://|www\.)[^\s<>\"')]++)"
    r"|(?P<email>[\w.+-]{1,64}+@[\w-]{1,63}+(?:\.[\w-]{1,63}+){1,8}+)"   # bounded: no rescans
    r"|(?P<num>\d++(?:[.,]\d+)*+)"
    rf"|(?P<cjk>[{_CJK}])"
    rf"|(?P<word>[^\W\d_{_CJK}]++)"
    r"|(?P<punct>[!$%?\u20ac\u00a3]))"
)
_URL_GROUP, _NUM_GROUP, _CJK_GROUP = (_TOKEN.groupindex[name] for name in ("url", "num", "cjk"))
assert list(_TOKEN.groupindex) == ["url", "email", "num", "cjk", "word", "punct"]
_MAX_WORD = 20
_CHARS_PER_TOKEN = 64       # text looked at per token wanted


class Analysis(NamedTuple):
    """What the pipeline extracts from one message."""

    tokens: list[str]   # header facts, then body words; at most max_tokens
    wide: bytes         # lower-cased bytes for the hashed word/char n-gram features


class _Part(NamedTuple):
    ctype: str          # e.g. "text/plain"
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


def analyze(raw: bytes, max_tokens: int = DEFAULT_MAX_TOKENS) -> Analysis:
    """Tokens and feature bytes of one raw message. Never raises on malformed input: an
    exception in the pipeline (a bug, since malformed mail is handled) costs the message
    its tokens, which become `<broken>, <exception name>`, and is logged with its
    traceback and counted (filterd_pipeline_errors_total), so that a parser regression
    cannot lower scores silently. Each message is analyzed once (Prepared.wide keeps what
    an explanation needs), so this is one line per message."""
    try:
        return _analyze(raw, max_tokens)
    except Exception as exc:  # noqa: BLE001 - a broken message must cost its score, not the daemon
        log.warning("text pipeline failed on a message of %d bytes; scored from <broken> tokens",
                    len(raw), exc_info=True)
        metrics.PIPELINE_ERRORS.inc()
        return Analysis(["<broken>", type(exc).__name__.lower()], bytes(raw[:WIDE_CAP]).lower())


def _analyze(raw: bytes, max_tokens: int) -> Analysis:
    raw = bytes(raw[:MAX_SCAN])
    if raw.startswith(b"From "):            # mbox separator line, not a header
        raw = raw.split(b"\n", 1)[-1]
    head, body = _split_head(raw)
    headers = _parse_headers(head)
    texts: list[str] = []
    extra: list[bytes] = []
    facts: list[str] = []
    _walk(headers, body, 0, texts, extra, facts, [0])
    tokens = _header_tokens(headers) + facts + ["<body>"]
    body_text = " ".join(texts)[:TEXT_CAP]
    tokens += tokenize(body_text, max_tokens - len(tokens))
    source = _DELIVERY_FIELD.sub(b"", raw[:len(head)]) + raw[len(head):WIDE_CAP]
    wide = (source[:WIDE_CAP] + b"\n" + b"\n".join(extra))[: 2 * WIDE_CAP].lower()
    return Analysis(tokens[:max_tokens], wide)


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    if raw.startswith((b"\n", b"\r\n")):
        return b"", raw.lstrip(b"\r\n")
    if _HEADER_LINE.match(raw, 0, raw.find(b"\n", 0, 1000) % 1001) is None:
        return b"", raw                     # no header at all: it is all body
    match = _HEAD_END.search(raw, 0, MAX_HEADER)
    if match is None:
        return raw[:MAX_HEADER], b""
    start = match.start()
    if start > 0 and raw[start - 1] == 13:  # \r
        start -= 1
    return raw[:start], raw[match.end():]


def _parse_headers(head: bytes) -> dict[str, str]:
    """Header name (lower case) → value (latin-1, RFC 2047 decoded); repeats joined by newlines."""
    out: dict[str, str] = {}
    # decoded once as a whole: names are ASCII, so lower-casing the latin-1 text is the same
    for name, value in _HEADER_LINE_STR.findall(_FOLD.sub(b" ", head[:MAX_HEADER]).decode("latin-1")):
        key = name.lower()
        text = value.rstrip(" \t\r")
        out[key] = out[key] + "\n" + text if key in out else text
    return out


def decode_header(value: str) -> str:
    """Decode RFC 2047 encoded words (=?charset?B|Q?...?=), tolerating every error."""
    if "=?" not in value:
        return value
    return _ENCODED_WORD.sub(_decode_word, value)


def _decode_word(match: re.Match[str]) -> str:
    charset, kind, data = match.group(1), match.group(2).upper(), match.group(3)
    raw = data.encode("latin-1", "replace")
    try:
        if kind == "B":
            decoded = _b64(raw)
        else:
            decoded = binascii.a2b_qp(raw.replace(b"_", b" "))
    except (binascii.Error, ValueError):
        return data
    return decode_bytes(decoded, charset.split("*")[0])


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes → str with the declared charset, else UTF-8, else Windows-1252 (never fails)."""
    if charset:
        try:
            codecs.lookup(charset)
            return data.decode(charset, "replace")
        except (LookupError, ValueError, TypeError, UnicodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _b64(data: bytes) -> bytes:
    clean = _B64_JUNK.sub(b"", data)        # drops padding too; we re-pad below
    extra = len(clean) % 4
    if extra == 1:                          # a lone trailing sextet carries no whole byte
        clean = clean[:-1]
    elif extra:
        clean += b"=" * (4 - extra)
    return binascii.a2b_base64(clean)


def _content_type(headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    value = headers.get("content-type", "").split("\n")[0]
    match = _CTYPE.match(value)
    ctype = match.group(1).lower() if match else "text/plain"
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM.finditer(value)}
    return ctype, params


def _walk(headers: dict[str, str], body: bytes, depth: int, texts: list[str],
          extra: list[bytes], facts: list[str], count: list[int]) -> None:
    """Depth-first walk of the MIME tree, appending decoded text and attachment facts."""
    count[0] += 1
    if count[0] > MAX_PARTS:
        return
    ctype, params = _content_type(headers)
    boundary = params.get("boundary", "")
    if ctype.startswith("multipart/") and boundary and depth < MAX_DEPTH:
        for part in _split_multipart(body, boundary.encode("latin-1", "replace")):
            head, sub = _split_head(part)
            _walk(_parse_headers(head), sub, depth + 1, texts, extra, facts, count)
        return
    if ctype.startswith("multipart/"):
        facts.append("<badmultipart>")
    _leaf(_Part(ctype, params, headers, body), texts, extra, facts)


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """Body parts between delimiter lines (RFC 2046 §5.1.1), up to the closing one."""
    delimiter = re.compile(rb"^--" + re.escape(boundary[:70]) + rb"(--)?[ \t]*\r?$", re.M)
    parts: list[bytes] = []
    start = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start: max(match.start() - 1, start)].removesuffix(b"\r"))
        if match.group(1) or len(parts) >= MAX_PARTS:
            return parts
        start = match.end() + 1
    if start is not None:                   # no closing delimiter: keep what follows
        parts.append(body[start:])
    return parts


def _leaf(part: _Part, texts: list[str], extra: list[bytes], facts: list[str]) -> None:
    encoding = part.headers.get("content-transfer-encoding", "").strip().lower()
    disposition = part.headers.get("content-disposition", "").lower()
    is_text = part.ctype in ("text/plain", "text/html") and "attachment" not in disposition
    budget = TEXT_CAP * 4 if is_text else 0
    data = part.body[: budget * 2 if encoding == "base64" else budget] if is_text else b""
    try:
        if encoding == "base64":
            data = _b64(data)
            if is_text:
                extra.append(data[:WIDE_CAP].lower())
        elif encoding == "quoted-printable":
            data = binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        facts.append("<badencoding>")
        data = b""
    if not is_text:
        facts.append("<att>")
        facts.append("ct:" + part.ctype[:40])
        return
    text = decode_bytes(data, part.params.get("charset"))
    if part.ctype == "text/html":
        facts.append("<html>")
        text = html_to_text(text)
    texts.append(text)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment: scripts, styles and comments dropped, tags become spaces."""
    return html.unescape(_HTML_TAG.sub(" ", _drop_hidden(markup)))


def _drop_hidden(markup: str) -> str:
    """Remove <script>/<style> elements and comments in linear time.

    A regular expression like `<script.*?</script>` rescans to the end for every unclosed
    opener, which hostile mail turns into seconds; here a closer that is missing once is
    never searched for again. An unclosed opener stays and becomes a space like any tag.
    """
    out: list[str] = []
    pos = 0
    missing: set[str | None] = set()
    while (match := _HIDDEN_OPEN.search(markup, pos)) is not None:
        kind = match.group(1).lower() if match.group(1) else None
        close = None if kind in missing else _HIDDEN_CLOSE[kind].search(markup, match.end())
        if close is None:
            missing.add(kind)
            out.append(markup[pos: match.end()])
            pos = match.end()
            continue
        out.append(markup[pos: match.start()])
        out.append(" ")
        pos = close.end()
    out.append(markup[pos:])
    return "".join(out)


def _domain(value: str) -> str:
    """The last two labels of the first domain in an address header ("@example.com")."""
    match = _DOMAIN.search(value)
    if not match:
        return "@none"
    labels = match.group(1).lower().strip(".").split(".")
    if all(label.isdigit() for label in labels):
        return "@ip"
    return "@" + ".".join(labels[-2:])


def _header_tokens(headers: dict[str, str]) -> list[str]:
    """Header facts first: the GRU reads them before the body."""
    subject = decode_header(headers.get("subject", "")).lower()
    sender = decode_header(headers.get("from", ""))
    display = _ANGLE_ADDR.sub(" ", sender).lower()
    received = headers.get("received", "").split("\n")
    hop = _RCVD_FROM.search(received[-1]) if received[-1] else None
    mailer = (headers.get("x-mailer") or headers.get("user-agent") or "none").split()
    ctype, _ = _content_type(headers)
    tokens = ["<subject>"] + tokenize(subject, 24)
    tokens += ["<from>"] + tokenize(display, 8) + [_domain(sender)]
    tokens += ["<to>", _domain(headers.get("to", ""))]
    tokens += ["<mid>", _domain(headers.get("message-id", ""))]
    tokens += ["<hop>", "@" + ".".join(hop.group(1).lower().split(".")[-2:]) if hop else "@none"]
    tokens += ["mailer:" + (mailer[0].lower()[:20] if mailer else "none"), "ct:" + ctype[:40]]
    tokens += [f"<{name}>" for name in ("list-id", "date", "x-spam-status", "in-reply-to")
               if name in headers]
    return tokens


def tokenize(text: str, limit: int) -> list[str]:
    """Lower-cased words with URLs, addresses and numbers normalised; CJK one character a token."""
    out: list[str] = []
    if limit <= 0:
        return out
    append = out.append
    # lower-casing the whole text would cost more than the tokens we keep: bound it
    for match in _TOKEN.finditer(text[: limit * _CHARS_PER_TOKEN].lower()):
        kind = match.lastindex or 0             # the group that matched (always one)
        value = match[0]
        if kind >= _CJK_GROUP:                  # cjk, word, punct: the text itself
            append(value if len(value) <= _MAX_WORD else "<long>")
        elif kind == _NUM_GROUP:
            append("<num>")
        elif kind == _URL_GROUP:
            host = value.split("//", 1)[-1].split("/", 1)[0].split(":")[0]
            out += ["<url>", "@" + ".".join(host.split(".")[-2:])]
        else:
            out += ["<email>", _domain(value)]
        if len(out) >= limit:
            break
    return out[:limit]


class Prepared(NamedTuple):
    """Model input for one message, ready for `Scorer.infer`."""

    ids: np.ndarray         # (tokens,) int64 vocabulary ids, at least one
    feat_ids: np.ndarray    # (k,) int64 hashed n-gram buckets
    feat_w: np.ndarray      # (k,) float32 their weights
    wide: bytes = b""       # Analysis.wide, kept (keep_wide) only for an explanation to name features


def prepare(raw: bytes, vocab: Vocab, idf: np.ndarray, max_tokens: int,
            scheme: str = "char_wb", keep_wide: bool = False) -> Prepared:
    """Raw message → ids and weighted features: the path both training and serving take."""
    analysis = analyze(raw, max_tokens)
    ids = vocab.encode(analysis.tokens or ["<body>"])
    feat_ids, feat_w = featurize(analysis.wide, idf, scheme)
    return Prepared(ids, feat_ids, feat_w, analysis.wide if keep_wide else b"")
