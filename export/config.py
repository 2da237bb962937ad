"""TrainConfig: every training setting with its default; `--set key=value` overrides them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from export.model import ModelConfig


@dataclass
class TrainConfig:
    seed: int = 1                 # model initialisation and batch order
    split_seed: int = 20240601    # which messages are train / validation / test
    val_frac: float = 0.15
    test_frac: float = 0.15
    max_messages: int = 0         # 0 = all; else a random subset of this size (smoke tests)
    max_tokens: int = 128         # tokens the GRU reads per message (256 was no better, 2-3x slower)
    features: str = "char_wb"     # hashed n-gram scheme (filterd.pipeline.features.SCHEMES)
    vocab_size: int = 30000
    min_count: int = 2
    epochs: int = 10
    patience: int = 3             # epochs without validation improvement before stopping
    batch_size: int = 32
    lr: float = 3e-3              # deep part (embedding, GRU, head), one-cycle
    wide_lr: float = 0.03         # wide part (0.1 and 0.01 were worse on validation)
    aux_weight: float = 1.0       # weight of each branch's own loss beside the sum's
    ham_weight: float = 1.0       # loss weight of ham relative to spam
    label_smoothing: float = 0.02 # targets eps/2 and 1 - eps/2: better low-FPR recall on validation
    wide_label_smoothing: float = 0.02  # the wide branch's own loss
    wide_drop: float = 0.0        # fraction of each batch whose sum leaves the wide logit out
    wide_first: int = 0           # >0: train the wide branch alone this many epochs, then freeze it
    wide_runs: int = 1            # with wide_first: orders averaged into the wide weights
    average: int = 1              # deep weights kept: mean of the best epoch and the ones before
    threads: int = 2
    dry_run: bool = False         # one batch of training, for smoke tests


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
