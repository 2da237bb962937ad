"""TrainConfig: every training setting with its default; `--set key=value` overrides them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from export.model import ModelConfig


@dataclass
class TrainConfig:
    seed: int = 1                 # model initialisation and batch order
    split_seed: int = 20240601    # which messages are held out as test (when test_frac > 0)
    test_frac: float = 0.0        # held out for the manifest's test figures; 0: all mail trains
    folds: int = 5                # cross-validation: combination, thresholds, manifest figures
    forward: str = "auto"         # forward validation for the manifest: folders|date|auto|off
    forward_frac: float = 0.3     # date split: the newest share of the mail is scored
    max_messages: int = 0         # 0 = all; else a random subset of this size (smoke tests)
    max_tokens: int = 128         # tokens the GRU reads per message (256 was no better, 2-3x slower)
    features: str = "char_wb"     # hashed n-gram scheme (filterd.pipeline.features.SCHEMES)
    vocab_size: int = 30000
    min_count: int = 2
    wide_c: float = 10.0          # LinearSVC C of the wide half (CV: 10 beat 0.3/1/3 in every fold)
    wide_ham_weight: float = 1.0  # LinearSVC class weight of ham (CV: no gain at C >= 3)
    wide_min_df: int = 10         # n-gram buckets in fewer training messages weigh nothing
    epochs: int = 6               # GRU epochs (cross-validated: the peak is at 4-6)
    average: int = 3              # GRU weights shipped: the mean of its last `average` epochs
    batch_size: int = 32
    lr: float = 3e-3              # GRU: AdamW at a constant rate
    weight_decay: float = 0.05    # GRU: AdamW's decoupled weight decay
    smoothing: float = 0.0        # GRU: label smoothing
    token_dropout: float = 0.0    # GRU: share of input tokens turned into <unk> while training
    short_views: float = 0.0      # GRU: share of messages shown cut to their first 8-48 tokens
    combine_c: float = 10.0       # C of the logistic regression over [wide, rnn] logits
    rnn_share: float = 1.0        # > 0: the GRU's share of the whole, fixed (recipe.fit_combination)
    tag_floor: float = 0.0        # the tag threshold is at least this (fit.calibrate)
    reject_floor: float = 0.0     # the reject threshold is at least this
    threads: int = 2
    dry_run: bool = False         # one batch of GRU training per fit, for smoke tests


def apply_overrides(cfg: object, pairs: list[str]) -> None:
    """Set dataclass fields from "key=value" strings, converting to the field's type."""
    known = [f.name for f in fields(cfg)]  # type: ignore[arg-type]
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise ValueError(f"unknown setting {pair!r}; known: {', '.join(known)}")
        current = getattr(cfg, key)
        parsed: object
        if isinstance(current, bool):
            parsed = value.lower() in ("1", "true", "yes")
        else:
            parsed = type(current)(value)
        setattr(cfg, key, parsed)


def split_overrides(pairs: list[str]) -> tuple[list[str], list[str]]:
    """Route overrides to TrainConfig or ModelConfig by field name (model.* prefix optional)."""
    model_keys = {f.name for f in fields(ModelConfig)}
    train: list[str] = []
    model: list[str] = []
    for pair in pairs:
        key = pair.split("=", 1)[0].removeprefix("model.")
        (model if key in model_keys else train).append(pair.removeprefix("model."))
    return train, model


def as_dict(cfg: object) -> dict[str, object]:
    return asdict(cfg)  # type: ignore[call-overload]
