"""Vocab: token ↔ id, saved as JSON in the artifact. Id 0 is <pad>, id 1 is <unk>."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from itertools import repeat
from pathlib import Path

import numpy as np

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


class Vocab:
    """A fixed token list; tokens never seen in training map to <unk>."""

    def __init__(self, tokens: list[str]) -> None:
        if tokens[:2] != [PAD, UNK]:
            raise ValueError("a vocabulary starts with <pad>, <unk>")
        self.tokens = tokens
        self.index = {token: i for i, token in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, docs: Iterable[list[str]], max_size: int, min_count: int = 2) -> Vocab:
        """Most frequent tokens of the training documents, ties broken alphabetically."""
        counts: Counter[str] = Counter()
        for tokens in docs:
            counts.update(tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in (PAD, UNK)),
                      key=lambda t: (-counts[t], t))
        return cls([PAD, UNK] + kept[: max_size - 2])

    def encode(self, tokens: list[str]) -> np.ndarray:
        """Token ids as int64, <unk> for unknown tokens."""
        # map over the tokens, not a generator expression: no Python frame per token
        return np.fromiter(map(self.index.get, tokens, repeat(UNK_ID, len(tokens))),
                           dtype=np.int64, count=len(tokens))

    def save(self, path: Path, spec: dict[str, object]) -> None:
        """Write the tokens and the tokenizer spec (pipeline version, token cap) as JSON."""
        path.write_text(json.dumps({"spec": spec, "tokens": self.tokens}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> tuple[Vocab, dict[str, object]]:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(list(data["tokens"])), dict(data["spec"])
