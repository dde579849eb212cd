"""Known values of erasure_lib.metrics.detection: AUROC (rank form, ties 1/2), the ROC curve, accuracy, TPR/FPR and
the stratified bootstrap of detection_metrics; bad input."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from erasure_lib.metrics.detection import (
    DETECTION_METRICS, accuracy, auroc, detection_estimates, detection_metrics, roc_curve, tpr_fpr,
)


def pairwise_auroc(scores, labels):
    """The definition, pair by pair: P(s+ > s-) + 1/2 P(s+ = s-) (an independent, O(n^2) reference)."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(s[y], s[~y])]
    return float(np.mean(wins))


def test_auroc_of_a_hand_computed_example_with_ties():
    # triggered {0.35, 0.8, 0.4}, clean {0.1, 0.4}: of the 6 pairs, 4 are ordered, (0.4, 0.4) is a tie (1/2) and
    # (0.35, 0.4) is reversed: (4 + 0.5) / 6
    assert auroc([0.1, 0.4, 0.35, 0.8, 0.4], [0, 0, 1, 1, 1]) == pytest.approx(4.5 / 6)
    # booleans, lists or arrays alike
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8, 0.4]), [False, False, True, True, True]) == pytest.approx(0.75)


def test_auroc_extremes_and_invariance():
    assert auroc([0.1, 0.2, 0.3, 0.9], [0, 0, 1, 1]) == 1.0           # perfect separation
    assert auroc([0.9, 0.8, 0.3, 0.1], [0, 0, 1, 1]) == 0.0           # perfectly reversed
    assert auroc([5.0, 5.0, 5.0, 5.0], [0, 1, 0, 1]) == 0.5           # all tied: chance
    rng = np.random.default_rng(3)
    s, y = rng.normal(size=60).round(1), rng.integers(0, 2, 60)         # rounding makes many ties
    y[:2] = [0, 1]
    a = auroc(s, y)
    assert a == pytest.approx(pairwise_auroc(s, y), abs=1e-12)
    assert auroc(np.exp(3 * s), y) == pytest.approx(a, abs=1e-12)       # a monotone map keeps the ranks
    assert auroc(-s, y) == pytest.approx(1 - a, abs=1e-12)              # flipping the scores flips the curve
    assert auroc(s, 1 - y) == pytest.approx(1 - a, abs=1e-12)           # and so does swapping the classes


def test_roc_curve_points_and_area():
    fpr, tpr, thr = roc_curve([0.1, 0.4, 0.35, 0.8, 0.4], [0, 0, 1, 1, 1])
    # thresholds: inf, 0.8, 0.4 (a tie of one clean and one triggered: a diagonal step), 0.35, 0.1
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=40).round(1), np.r_[np.zeros(20), np.ones(20)]
    f, t, _ = roc_curve(s, y)
    assert np.trapezoid(t, f) == pytest.approx(auroc(s, y), abs=1e-12)
    assert (np.diff(f) >= 0).all() and (np.diff(t) >= 0).all() and f[-1] == t[-1] == 1


def test_accuracy_and_rates_known_values():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    flags = [True, True, True, False, True, False, False, False, False, False]
    assert accuracy(flags, labels) == pytest.approx(8 / 10)
    assert tpr_fpr(flags, labels) == pytest.approx((3 / 4, 1 / 6))
    assert accuracy(np.array(flags, int), labels) == pytest.approx(0.8)   # 0/1 flags too
    tpr, fpr = tpr_fpr([False, True], [0, 0])
    assert np.isnan(tpr) and fpr == 0.5                                    # no triggered prompt: TPR undefined


def test_detection_metrics_row_values_and_intervals():
    scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.2, 0.05]
    labels = [0, 0, 1, 1, 1, 1, 0, 0]
    row = detection_metrics(scores, labels, threshold=0.38, n_boot=300, seed=1, detector="FTT", attack="x")
    assert isinstance(row, pd.DataFrame) and len(row) == 1
    r = row.iloc[0]
    assert r.detector == "FTT" and r.attack == "x"
    # flagged (> 0.38): 0.4, 0.8, 0.4, 0.9 -> triggered 3 of 4, clean 1 of 4
    assert r.auroc == pytest.approx(pairwise_auroc(scores, labels))
    assert r.tpr == pytest.approx(0.75) and r.fpr == pytest.approx(0.25) and r.acc == pytest.approx(0.75)
    for m in DETECTION_METRICS:
        assert 0.0 <= r[f"{m}_lo"] <= r[m] <= r[f"{m}_hi"] <= 1.0
    assert (r.n_clean, r.n_triggered, r.n_boot, r.threshold) == (4, 4, 300, 0.38)
    # deterministic given the seed; another seed moves the intervals, never the values
    again = detection_metrics(scores, labels, threshold=0.38, n_boot=300, seed=1, detector="FTT", attack="x")
    pd.testing.assert_frame_equal(row, again)
    other = detection_metrics(scores, labels, threshold=0.38, n_boot=300, seed=2).iloc[0]
    assert other.auroc == r.auroc and other.acc == r.acc
    # no bootstrap: NaN intervals
    plain = detection_metrics(scores, labels, threshold=0.38, n_boot=0).iloc[0]
    assert np.isnan(plain.auroc_lo) and np.isnan(plain.fpr_hi) and plain.auroc == r.auroc


def test_bootstrap_is_stratified():
    # one triggered prompt among 30 clean ones: an unstratified resample would often draw no triggered prompt
    # (AUROC undefined); stratified, every resample keeps it, so the interval exists and TPR stays 0 or 1
    rng = np.random.default_rng(5)
    scores = np.r_[rng.normal(size=30), 10.0]
    labels = np.r_[np.zeros(30), 1]
    est = detection_estimates(scores, labels, threshold=5.0, n_boot=200, seed=0)
    assert est["auroc"].value == 1.0 and est["auroc"].lo == 1.0 and est["auroc"].hi == 1.0
    assert est["tpr"].lo == est["tpr"].hi == 1.0
    assert est["fpr"].value == 0.0 and est["auroc"].details["n_triggered"] == 1
    assert "stratified" in est["auroc"].details["resampling"]
    # every resample holds 30 clean prompts and the triggered one, all on the right side of the threshold
    assert est["acc"].value == est["acc"].lo == est["acc"].hi == 1.0


@pytest.mark.parametrize("scores, labels, match", [
    ([0.1, 0.2], [1, 1], "clean and triggered"),
    ([0.1, 0.2], [0, 0], "clean and triggered"),
    ([0.1, np.nan, 0.3], [0, 1, 1], "NaN"),
    ([0.1, 0.2, 0.3], [0, 1], "one label per prompt"),
    ([0.1, 0.2, 0.3], [0, 1, 2], "0 \\(clean\\) or 1"),
    ([0.1, 0.2], ["clean", "triggered"], "0/1 or booleans"),
    ([[0.1, 0.2]], [0, 1], "one-dimensional"),
])
def test_bad_input_is_refused(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        auroc(scores, labels)
    with pytest.raises(ValueError, match=match):
        detection_metrics(scores, labels, threshold=0.0, n_boot=10)


def test_bad_flags_and_thresholds_are_refused():
    with pytest.raises(ValueError, match="one flag per prompt"):
        accuracy([True], [0, 1])
    with pytest.raises(ValueError, match="booleans or 0/1"):
        accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="threshold is NaN"):
        detection_metrics([0.1, 0.9], [0, 1], threshold=float("nan"), n_boot=10)
    with pytest.raises(ValueError, match="single|clean and triggered"):
        roc_curve([0.3, 0.4], [1, 1])
