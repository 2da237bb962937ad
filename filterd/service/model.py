"""The model a config names: load it, check it, warm it up, and blame the right key if not.

The policy is checked against the model too: `policy.reject_at` below `policy.tag_at` once
"manifest" is resolved to the model's calibrated threshold is a ConfigError naming reject_at.

`serve` (at start and on every reload) and `check-config` load the model the same way,
so a model that check-config accepts is one the daemon starts with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from filterd.config import Config
from filterd.errors import ConfigError, ModelError
from filterd.verdict import policy_problem

if TYPE_CHECKING:   # onnxruntime is heavy: imported only when a model is really loaded
    from filterd.pipeline.scorer import Scorer


def _message(key: str, path: str, why: str) -> str:
    return f"{key}: {why}" if path in why else f"{key}: {path}: {why}"


def load_scorer(config: Config) -> Scorer:
    """Load and warm up the model; a ConfigError names `model.path` or `model.device`."""
    from filterd.pipeline.scorer import Scorer

    model = config.model
    try:
        scorer = Scorer.load(model.path, model.device, threads=model.threads,
                             max_tokens=config.scoring.max_tokens)
        scorer.warmup()
    except ModelError as exc:   # exc.key says which setting the trouble is about
        raise ConfigError(_message(exc.key, model.path, str(exc))) from None
    except (OSError, RuntimeError, ValueError) as exc:  # onnxruntime's own failures
        raise ConfigError(_message("model.path", model.path, f"cannot run the model: {exc}")) from None
    problem = policy_problem(config.policy.tag_at, config.policy.reject_at, scorer.thresholds)
    if problem is not None:
        raise ConfigError(problem)
    return scorer
