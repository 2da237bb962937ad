"""Why a message got its score: the n-gram features that moved the logit most, and the rest.

The network's whole logit is the recurrent part plus the wide (linear) part over hashed
n-grams. The artifact ships the wide part's weight of every bucket as it enters the whole
logit (`wide.npy`, `Scorer.wide_weights`), so feature i of a message adds exactly

    contribution_i = wide_weights[feat_ids[i]] * feat_w[i]

to the logit. Whatever is left, whole logit − Σ contributions, is what the recurrent part
(and the bias) contributed. We never assume how the graph adds the two parts up: deriving
the recurrent share as a remainder stays right if the model learns to weigh them.

Each listed bucket is named by the first span of the message that hashed to it
(features.first_spans), so a postmaster reads `word "unsubscribe"` or `chars "viagr"`
rather than a bucket number. Collisions are possible (2**20 buckets); the name is the
span in *this* message, which is what matters for it.

In the daemon this costs no more text pipeline and no more inference: the batch that
scores the message keeps its prepared form and logit (batcher.Scored) and
`explain_prepared` works from those. Front-ends still only ask for it when the answer is
shown (policy.report, spamd SYMBOLS/REPORT); `classify --explain` calls `explain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from filterd.pipeline import features, text

if TYPE_CHECKING:
    from filterd.pipeline.scorer import Model

TOP_K = 10
_SHOWN = 40            # longest span shown, in characters


@dataclass(frozen=True)
class Reason:
    """One feature and what it added to the logit (positive: towards spam)."""

    kind: str            # "word" | "chars"
    text: str            # the span of the message, whitespace shown as "_" in char n-grams
    contribution: float


@dataclass(frozen=True)
class Explanation:
    """The logit split into the listed features, the other features, and the recurrent part."""

    logit: float                  # the whole network's logit (score = sigmoid(logit))
    recurrent: float              # whole − Σ n-gram contributions: RNN part plus bias
    other_ngrams: float           # the n-gram features not listed
    reasons: tuple[Reason, ...]   # the top features by |contribution|, largest first

    def as_dict(self) -> dict[str, Any]:
        return {"logit": round(self.logit, 4), "recurrent": round(self.recurrent, 4),
                "other_ngrams": round(self.other_ngrams, 4),
                "features": [{"kind": r.kind, "text": r.text, "contribution": round(r.contribution, 4)}
                             for r in self.reasons]}


def contributions(scorer: Model, prepared: text.Prepared) -> np.ndarray:
    """(k,) float64: what each of the message's n-gram features adds to the whole logit."""
    return (scorer.wide_weights[prepared.feat_ids].astype(np.float64)
            * prepared.feat_w.astype(np.float64))


def top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest |values|, largest first (stable for ties)."""
    order = np.argsort(-np.abs(values), kind="stable")
    return order[:k]


def explain(scorer: Model, raw: bytes, k: int = TOP_K) -> Explanation:
    """Score `raw` and say why. Runs the text pipeline and the model: call it in an executor."""
    prepared = scorer.prepare(raw, keep_wide=True)
    return explain_prepared(scorer, prepared, float(scorer.infer_logits([prepared])[0, 0]), k)


def explain_prepared(scorer: Model, prepared: text.Prepared, logit: float, k: int = TOP_K) -> Explanation:
    """Why a message prepared with `keep_wide` got the whole-network `logit`: neither the
    text pipeline nor the model runs again (the daemon's scan hands over its batch's work)."""
    contrib = contributions(scorer, prepared)
    if not prepared.feat_w.any():   # an empty message: featurize's one placeholder feature
        contrib = np.zeros(0)
    picked = top(contrib, k)
    names = _names(scorer, prepared, picked)
    reasons = tuple(Reason(kind, name, float(contrib[i]))
                    for i, (kind, name) in zip(picked.tolist(), names))
    listed = float(contrib[picked].sum()) if picked.size else 0.0
    total = float(contrib.sum())
    return Explanation(logit, logit - total, total - listed, reasons)


def _names(scorer: Model, prepared: text.Prepared, picked: np.ndarray) -> list[tuple[str, str]]:
    """(kind, span) of the picked features, by re-deriving featurize's key order from the
    message's n-gram text (prepared.wide)."""
    if picked.size == 0:
        return []
    data = prepared.wide
    words, chars = features.hash_ngrams(data, scorer.scheme)
    # featurize sorts distinct keys, words first (< BUCKETS), then chars (+ BUCKETS): the same
    # order its ids come out in, so position i of feat_ids is a word iff keys[i] < BUCKETS.
    keys = np.unique(np.concatenate((words, chars + features.BUCKETS)))
    if keys.size != prepared.feat_ids.size:   # prepared without keep_wide, or featurize changed
        return [("feature", f"#{b}") for b in prepared.feat_ids[picked].tolist()]
    is_word = keys[picked] < features.BUCKETS
    buckets = prepared.feat_ids[picked]
    found_words, found_chars = features.first_spans(
        data, buckets[is_word], buckets[~is_word], scorer.scheme)
    out = []
    for word, bucket in zip(is_word.tolist(), buckets.tolist()):
        span = (found_words if word else found_chars).get(bucket, b"")
        out.append(("word" if word else "chars", _show(span, word)))
    return out


def _show(span: bytes, word: bool) -> str:
    shown = span.decode("utf-8", "replace")
    if not word:   # a char n-gram's boundary is the whitespace that featurize counts as one space
        shown = "".join("_" if c.isspace() else c for c in shown)
    shown = "".join(c if c.isprintable() else "?" for c in shown)
    return shown if len(shown) <= _SHOWN else shown[:_SHOWN - 1] + "…"


def symbols(explanation: Explanation, k: int = TOP_K) -> list[str]:
    """SpamAssassin-style rule names of the listed features that pushed towards spam, e.g.
    `FD_WORD_UNSUBSCRIBE`, `FD_CHARS_VIAGR`, each once (a symbol is a rule that fired).

    A name keeps ASCII letters (upper-cased) and digits, `_` for the whitespace a char
    n-gram shows as `_`, and writes any other character as `x` and its hex code point
    (`|` -> `x7C`, `é` -> `xE9`): letters are upper case, so a lower-case `x` always starts
    such an escape, and two different spans never get the same name (up to the cut at 40
    characters, between two characters; the first feature wins).
    """
    out: list[str] = []
    for reason in explanation.reasons[:k]:
        if reason.contribution <= 0:
            continue
        prefix = "FD_WORD_" if reason.kind == "word" else "FD_CHARS_"
        name = prefix + _symbol_text(reason.text)
        if name not in out:
            out.append(name)
    return out


def _symbol_text(text: str) -> str:
    """The span as a rule name's tail, cut between characters at _SHOWN."""
    out = ""
    for c in text:
        piece = c.upper() if c.isascii() and c.isalnum() else "_" if c == "_" else f"x{ord(c):02X}"
        if len(out) + len(piece) > _SHOWN:
            break
        out += piece
    return out


def summary(explanation: Explanation, k: int = 5) -> str:
    """One line for a header: `rnn=+3.10 "free"=+0.52 "mee"=-0.31 …` (logit units)."""
    parts = [f"rnn={explanation.recurrent:+.2f}"]
    for reason in explanation.reasons[:k]:
        parts.append(f"{reason.kind}:{reason.text!r}={reason.contribution:+.2f}")
    return " ".join(parts)
