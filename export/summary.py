"""What `python -m export train` says at the end: a short table a person can read.

The full figures (every digit) go into the artifact's manifest.json; this is the part worth
looking at after a run, rounded, plus warnings about a model that is unlikely to be useful.
"""

from __future__ import annotations

from typing import Any

# A threshold this close to another is "the same" for the warning.
_SAME = 1e-9


def _row(name: str, figures: dict[str, Any]) -> str:
    auc, recall = figures["auc"], figures["recall_at_0.2pct_fpr"]
    auc, recall = (auc["mean"], recall["mean"]) if isinstance(auc, dict) else (auc, recall)
    return f"  {name:<6} AUC {auc:.5f}   spam recall at <= 0.2 % ham flagged {100 * recall:5.1f} %"


def render(report: dict[str, Any], thresholds: dict[str, float], combination: Any) -> str:
    """The lines to print: per part, cross-validation (mean over folds) and test figures."""
    lines = []
    cv = report.get("cv")
    if cv:
        lines.append(f"cross-validation ({cv['folds']} folds, mean):")
        lines += [_row(name, cv[name]) for name in ("whole", "rnn", "wide")]
    if "test" in report:
        test = report["test"]
        lines.append(f"test split ({test['whole']['ham']} ham, {test['whole']['spam']} spam):")
        lines += [_row(name, test[name]) for name in ("whole", "rnn", "wide")]
    forward = report.get("forward")
    if forward:
        lines.append(f"forward ({forward['split']}: trained on the older mail, scored on the newer):")
        lines += [_row(name, forward[name]) for name in ("whole", "rnn", "wide", "bogofilter")
                  if name in forward]
        tag = forward["whole"]["at_tag"]
        lines.append(f"  at its own tag threshold: {100 * tag['ham_fpr']:.1f} % of newer ham flagged, "
                     f"{100 * tag['spam_recall']:.1f} % of newer spam")
    lines.append(f"thresholds: tag {thresholds['tag']:.5f}, reject {thresholds['reject']:.5f}")
    lines.append("combination: " + ", ".join(f"{k} {v:.3f}" for k, v in combination._asdict().items()))
    return "\n".join(lines + [f"warning: {w}" for w in warnings(thresholds)])


def warnings(thresholds: dict[str, float]) -> list[str]:
    """What a user should know before installing this model."""
    out = []
    if abs(thresholds["tag"] - thresholds["reject"]) <= _SAME:
        out.append(f"tag and reject are the same ({thresholds['tag']:.3f}): there is too little "
                   "out-of-fold ham to tell 0.5 % from 0.1 % of it flagged, so policy.reject_at: "
                   "manifest would reject everything it tags; train on more mail")
    return out
