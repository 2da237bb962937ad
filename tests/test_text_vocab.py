"""Vocabulary: building, OOV → <unk>, JSON round trip."""

from __future__ import annotations

import pytest

from filterd.pipeline import text
from filterd.pipeline.vocab import PAD_ID, UNK_ID, Vocab


def test_build_keeps_frequent_tokens_and_maps_unknown_to_unk() -> None:
    vocab = Vocab.build([["cheap", "pills", "cheap"], ["cheap", "hello", "pills"], ["once"]],
                        max_size=10, min_count=2)
    assert vocab.tokens == ["<pad>", "<unk>", "cheap", "pills"]
    ids = vocab.encode(["cheap", "never-seen", "once", "pills"])
    assert ids.tolist() == [2, UNK_ID, UNK_ID, 3]
    assert PAD_ID not in ids.tolist()


def test_max_size_and_tie_order_are_deterministic() -> None:
    docs = [["b", "a", "c"], ["c", "a", "b"]]
    assert Vocab.build(docs, max_size=4).tokens == ["<pad>", "<unk>", "a", "b"]


def test_json_round_trip_keeps_spec(tmp_path) -> None:
    vocab = Vocab(["<pad>", "<unk>", "東", "café"])
    vocab.save(tmp_path / "vocab.json", {"pipeline_version": text.PIPELINE_VERSION})
    loaded, spec = Vocab.load(tmp_path / "vocab.json")
    assert loaded.tokens == vocab.tokens
    assert spec == {"pipeline_version": text.PIPELINE_VERSION}


def test_oov_message_is_all_unk_after_the_header_facts() -> None:
    vocab = Vocab(["<pad>", "<unk>", "<subject>", "<body>"])
    analysis = text.analyze(b"Subject: zzqx\r\n\r\nqwertyzz plughxyzzy\r\n")
    ids = vocab.encode(analysis.tokens).tolist()
    assert ids[0] == 2 and ids[-3:] == [3, UNK_ID, UNK_ID]


def test_vocab_must_start_with_pad_and_unk() -> None:
    with pytest.raises(ValueError):
        Vocab(["<unk>", "<pad>"])
