"""AUC, threshold at a false-positive rate, calibration."""

from __future__ import annotations

import numpy as np

from export import metrics


def test_auc_known_values() -> None:
    assert metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert metrics.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert metrics.roc_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.1, 0.2])) == 0.5


def test_threshold_flags_at_most_the_allowed_ham() -> None:
    ham = np.linspace(0, 1, 1000)
    for fpr in (0.0, 0.001, 0.005, 0.02):
        t = metrics.threshold_at_fpr(ham, fpr)
        assert (ham >= t).sum() <= int(fpr * 1000)
        assert (ham >= np.nextafter(ham[ham < t].max(), -1)).sum() > int(fpr * 1000)


def test_calibrate_and_confusion_counts() -> None:
    labels = np.array([0] * 1000 + [1] * 10)
    scores = np.concatenate([np.linspace(0, 0.5, 1000), np.full(10, 0.9)])
    cal = metrics.calibrate(labels, scores)
    assert cal["tag"] <= cal["reject"]
    tag = metrics.at_threshold(labels, scores, cal["tag"])
    assert tag["fp"] <= 5 and tag["tp"] == 10 and tag["spam_recall"] == 1.0
    assert metrics.at_threshold(labels, scores, cal["reject"])["fp"] <= 1


def test_summary_ranks_logits_that_probabilities_would_tie() -> None:
    # Past a logit of about 37 float64 sigmoid is exactly 1.0: the ham at 40 and the spam
    # at 50 would tie there, but the logits keep them apart.
    labels = np.array([0, 0, 1, 1])
    logits = np.array([-3.0, 40.0, 50.0, 60.0])
    assert 1.0 / (1.0 + np.exp(-40.0)) == 1.0 / (1.0 + np.exp(-50.0))
    assert metrics.summary(labels, logits)["auc"] == 1.0


def test_train_summary_warns_when_tag_equals_reject() -> None:
    from export import summary

    assert summary.warnings({"tag": 0.42, "reject": 0.9}) == []
    (warning,) = summary.warnings({"tag": 0.5, "reject": 0.5})
    assert warning.startswith("tag and reject are the same (0.500)")
