"""Scorer: loads model_artifacts/ (checking every hash), prepares messages and scores batches.

The ONNX graph is one step of the network over a chunk of tokens. It takes the chunk and
the carried state (GRU state, running max and sum of its outputs, token count, the wide
branch's sum) and returns the logits and the new state, so a long message is scored chunk
by chunk with bounded memory and gives the same score as in one piece.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from pathlib import Path

import numpy as np
import onnxruntime as ort

from filterd.pipeline import features, text
from filterd.errors import DeviceError, ModelError
from filterd.pipeline.artifact import read_manifest
from filterd.pipeline.features import load_buckets
from filterd.pipeline.text import Prepared
from filterd.pipeline.vocab import Vocab

log = logging.getLogger(__name__)

_SUB_BATCH = 64                 # messages per onnxruntime call: bounds memory for any batch
_STATE = ("h", "run_max", "run_sum", "count", "wide_sum")   # carried from chunk to chunk, graph order


@dataclass(frozen=True)
class Thresholds:
    tag: float      # calibrated: <= 0.5 % of the training ham, scored out of fold, at or above
    reject: float   # calibrated: <= 0.1 % of the training ham, scored out of fold, at or above


def _providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"unknown device {device!r}: auto, cpu or cuda")
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise DeviceError("device cuda asked for, but onnxruntime has no CUDAExecutionProvider "
                         f"(available: {', '.join(available)})")
    return ["CPUExecutionProvider"]


class Model(Protocol):
    """What the daemon uses of a model where modules meet (the batcher, scan, explain, the
    front-ends): Scorer below, or in tests a scorer made to fail or to be slow."""

    version: str
    provider: str
    thresholds: Thresholds
    scheme: str
    max_tokens: int
    wide_weights: np.ndarray

    def prepare(self, raw: bytes, keep_wide: bool = False) -> Prepared: ...

    def infer(self, batch: Sequence[Prepared]) -> list[float]: ...

    def infer_logits(self, batch: Sequence[Prepared]) -> np.ndarray: ...


class Scorer:
    """Spam probability of raw messages with the shipped (or any compatible) artifact."""

    def __init__(self, session: ort.InferenceSession, manifest: dict, vocab: Vocab,
                 idf: np.ndarray, wide: np.ndarray, max_tokens: int, chunk_tokens: int) -> None:
        self.session = session
        self.manifest = manifest
        self.vocab = vocab
        # A message's n-grams hit a few thousand random buckets of two 2**20 tables (its IDF
        # weights, then the wide weights): a cache miss each, which cost more than the rest
        # of the text pipeline on a message that finds the caches cold. Side by side in one
        # (buckets, 2) float32 table, both values of a bucket come in one cache line:
        # features of 40 corpus messages, warm 298 -> 250 us, cold 750 -> 410-750 us.
        table = np.empty((len(idf), 2), np.float32)
        table[:, 0], table[:, 1] = idf, wide
        self.idf = table[:, 0]
        # The wide branch's weight of each bucket as it enters the whole logit: what an
        # explanation multiplies each feature's weight by (the graph holds the same numbers).
        self.wide_weights = table[:, 1]
        self.max_tokens = max_tokens
        self.chunk_tokens = chunk_tokens
        self.hidden = int(manifest["model"]["hidden"])
        # first artifacts predate the choice and used "alnum" words
        self.scheme = str(manifest["text"].get("features", "alnum"))
        self.version: str = str(manifest["version"])
        self.thresholds = Thresholds(float(manifest["thresholds"]["tag"]),
                                     float(manifest["thresholds"]["reject"]))
        self.provider: str = session.get_providers()[0]

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", *, threads: int = 1,
             max_tokens: int = 4096, chunk_tokens: int = 256) -> Scorer:
        """Open an artifact folder. Raises ModelError with a clear message on any problem.

        The model reads at most the number of tokens it was trained with (manifest
        text.max_tokens); `max_tokens` can only lower that.
        """
        path = Path(path)
        manifest = read_manifest(path)
        if chunk_tokens < 1 or max_tokens < 1 or threads < 1:
            raise ModelError("threads, max_tokens and chunk_tokens must be at least 1")
        try:
            vocab, _spec = Vocab.load(path / "vocab.json")
            idf = load_buckets(path / "idf.npy")
            wide = load_buckets(path / "wide.npy")
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{path}: bad vocabulary or IDF table: {exc}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path / "model.onnx"), options,
                                           providers=_providers(device))
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{path / 'model.onnx'}: onnxruntime cannot load it: {exc}") from exc
        limit = min(max_tokens, int(manifest["text"]["max_tokens"]))
        scorer = cls(session, manifest, vocab, idf, wide, limit, chunk_tokens)
        log.info("model %s loaded from %s on %s; n-grams hashed %s", scorer.version, path,
                 scorer.provider, "in C" if features.NATIVE else
                 "with numpy (the C extension is not built: a compiler at install time makes it)")
        return scorer

    def prepare(self, raw: bytes, keep_wide: bool = False) -> Prepared:
        """Text pipeline only: pure CPU, thread-safe, never raises on bad mail. `keep_wide`:
        keep the n-gram text, for an explanation (explain.explain_prepared)."""
        return text.prepare(raw, self.vocab, self.idf, self.max_tokens, self.scheme, keep_wide)

    def infer(self, batch: Sequence[Prepared]) -> list[float]:
        """Spam probabilities of prepared messages, any batch size."""
        logits = self.infer_logits(batch)[:, 0]
        return [1.0 / (1.0 + math.exp(-min(max(x, -80.0), 80.0))) for x in logits.tolist()]

    def infer_logits(self, batch: Sequence[Prepared]) -> np.ndarray:
        """(batch, 3) logits: whole network, recurrent part alone, wide part alone."""
        out = np.zeros((len(batch), 3), dtype=np.float64)
        for start in range(0, len(batch), _SUB_BATCH):
            out[start:start + _SUB_BATCH] = self._run(batch[start:start + _SUB_BATCH])
        return out

    def score(self, raws: Sequence[bytes]) -> list[float]:
        return self.infer([self.prepare(raw) for raw in raws])

    def warmup(self) -> None:
        self.score([b"Subject: warmup\r\n\r\nhello\r\n"])

    def wide_sums(self, batch: Sequence[Prepared]) -> np.ndarray:
        """(batch,) the wide branch's dot product of each message, sparse, in float64.

        The graph could take the features too (its feat_ids/feat_w inputs), but a padded
        (batch, k) feature batch is as wide as the message with the most n-grams in it:
        about 50,000 columns for a long one, so 19 MB and most of the graph's time for 32
        messages of which one is long. The graph adds whatever `wide_sum` it is given.
        """
        # multiply and sum (features.sparse_dot), not np.dot: a float64-by-float32 dot leaves
        # BLAS for a slow generic loop (0.3 ms for 4,500 features, against 26 us for numpy's
        # multiply and sum, and fewer in C)
        return np.array([features.sparse_dot(p.feat_ids, p.feat_w, self.wide_weights) for p in batch],
                        dtype=np.float64)

    def _run(self, batch: Sequence[Prepared]) -> np.ndarray:
        """Chunk by chunk over the tokens; each chunk runs only the messages still going.

        Most messages fit one chunk (the shipped model reads 128 tokens), so the common case
        is one onnxruntime call on arrays built once; the glue around it is kept small
        because it costs about as much as the call's own fixed overhead.
        """
        n, h = len(batch), self.hidden
        lengths = np.fromiter((len(p.ids) for p in batch), np.int64, n)
        state = [np.zeros((n, h), np.float32), np.full((n, h), -1.0, np.float32),
                 np.zeros((n, h), np.float32), np.zeros(n, np.float32),
                 self.wide_sums(batch).astype(np.float32)]
        # No features through the graph: their sum is already in wide_sum (wide_sums).
        no_ids, no_w = np.zeros((n, 1), np.int64), np.zeros((n, 1), np.float32)
        logits = np.zeros((n, 3), dtype=np.float64)
        step = self.chunk_tokens
        for start in range(0, int(lengths.max()), step):
            active = np.flatnonzero(lengths > start)     # messages with tokens left
            every = active.size == n
            span = np.minimum(lengths[active] - start, step)
            tokens = np.zeros((active.size, int(span.max())), np.int64)   # (batch, time)
            for row, i in enumerate(active.tolist()):
                tokens[row, : span[row]] = batch[i].ids[start:start + step]
            feeds: dict[str, np.ndarray] = dict(zip(_STATE, state if every else [v[active] for v in state]))
            feeds.update(tokens=tokens, lengths=span, feat_ids=no_ids[: active.size],
                         feat_w=no_w[: active.size])
            try:
                logit, logit_rnn, logit_wide, *new_state = self.session.run(None, feeds)
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelError(f"onnxruntime failed: {exc}") from exc
            if every:
                logits[:, 0], logits[:, 1], logits[:, 2] = logit, logit_rnn, logit_wide
                state = new_state
            else:
                logits[active] = np.stack([logit, logit_rnn, logit_wide], axis=1)
                for value, new in zip(state, new_state):
                    value[active] = new
        return logits
