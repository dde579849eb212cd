"""Metrics of input-level backdoor detection: AUROC, accuracy, TPR / FPR at a threshold, the ROC curve, and
stratified percentile-bootstrap intervals for all of them.

Convention (every detector of :mod:`erasure_lib.detect`): ``labels`` are 1 (or ``True``) for a prompt that carries
the trigger and 0 for a clean prompt; ``scores`` are higher for prompts more likely to carry the trigger; a prompt
is *flagged* when ``score > threshold`` (strictly, as SET's ``detect.py`` flags ``s > R^2``).

* :func:`auroc`: the area under the ROC curve in its rank (Mann-Whitney U) form,
  ``AUROC = P(s_triggered > s_clean) + 1/2 P(s_triggered = s_clean)``, computed from mid-ranks in
  ``O(n log n)``. It equals the trapezoidal area under :func:`roc_curve` (ties give a diagonal segment).
* :func:`accuracy`: the share of prompts whose flag equals their label (SET's ``ACC``; on a balanced set such as
  SET's 500 + 500 evaluation files it is the mean of TPR and 1 - FPR).
* :func:`detection_metrics`: AUROC, ACC, TPR and FPR at ``threshold`` with percentile-bootstrap intervals, as
  one table row. The bootstrap is **stratified**: clean and triggered prompts are resampled separately, each
  set at its own size (:func:`~erasure_lib.metrics.bootstrap.bootstrap_ci` with ``sizes=(n_clean, n_triggered)``),
  so both classes stay present in every resample (AUROC needs both) and the class balance is the one measured.
  Every metric is computed on the same resamples (one seed), so the intervals of one row are coherent.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .bootstrap import Estimate, bootstrap_ci

__all__ = ["AIGI_METRICS", "DETECTION_METRICS", "accuracy", "aigi_metrics", "auroc", "average_precision",
           "detection_estimates", "detection_metrics", "roc_curve", "tpr_fpr"]

DETECTION_METRICS = ("auroc", "acc", "tpr", "fpr")
AIGI_METRICS = ("acc", "ap", "real_acc", "fake_acc")


# --- input checks ---------------------------------------------------------------------------------------------

def _labels(labels, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if n is not None and len(y) != n:
        raise ValueError(f"need one label per prompt: {n} scores/flags but {len(y)} labels")
    if y.dtype == bool:
        return y
    if y.dtype.kind not in "iuf":
        raise ValueError(f"labels must be 0/1 or booleans, got dtype {y.dtype}")
    if np.isnan(y.astype(float)).any():
        raise ValueError("labels contain NaN")
    if not np.isin(y, (0, 1)).all():
        bad = sorted(set(y.tolist()) - {0, 1})[:5]
        raise ValueError(f"labels must be 0 (clean) or 1 (triggered), got values {bad}")
    return y.astype(bool)


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN: a detector failed on some prompt; drop or fix it before scoring")
    return s


def _both_classes(y: np.ndarray) -> None:
    if y.all() or not y.any():
        which = "1" if y.any() else "0"
        raise ValueError(f"AUROC / AP need both classes (clean and triggered prompts, or real and generated "
                         f"images), but every label is {which} ({len(y)} items)")


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores)
    y = _labels(labels, len(s))
    _both_classes(y)
    return s, y


# --- the metrics ----------------------------------------------------------------------------------------------

def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)             # rank of the last member of each group of equal values
    return (upper - (counts - 1) / 2.0)[inverse]


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` (higher = triggered) against ``labels`` (1 = triggered).

    The Mann-Whitney form: ``(R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)`` with ``R_+`` the sum of the mid-ranks of the
    triggered prompts, i.e. the share of (triggered, clean) pairs ordered correctly, a tie counting 1/2.
    1 = perfect separation, 0.5 = chance (or all scores equal), 0 = perfectly reversed. Raises ``ValueError`` on
    NaN scores, a length mismatch, labels other than 0/1, or a single class."""
    s, y = _scores_labels(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    rank_sum = float(_midranks(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: the ROC curve, one point per distinct score, for plots.

    Point ``k`` flags every prompt whose score is ``>= thresholds[k]``; the first point is ``(0, 0)`` at
    threshold ``+inf``, the last ``(1, 1)``. The trapezoidal area under it equals :func:`auroc`. (To flag with a
    threshold as :func:`detection_metrics` does, ``score > t``, take ``t`` just below ``thresholds[k]``.)"""
    s, y = _scores_labels(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # descending: the end of each group of ties
    tp = np.cumsum(y)[last_of_value]
    fp = np.cumsum(~y)[last_of_value]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[last_of_value]]


def _flags(flags, n: int | None = None) -> np.ndarray:
    f = np.asarray(flags)
    if f.ndim != 1:
        raise ValueError(f"flags must be one-dimensional, got shape {f.shape}")
    if n is not None and len(f) != n:
        raise ValueError(f"need one flag per prompt: {len(f)} flags but {n} labels")
    if f.dtype != bool:
        if f.dtype.kind not in "iu" or not np.isin(f, (0, 1)).all():
            raise ValueError(f"flags must be booleans or 0/1, got dtype {f.dtype}")
        f = f.astype(bool)
    return f


def accuracy(flags: Sequence[bool], labels: Sequence[int]) -> float:
    """Share of prompts whose flag (``True`` = flagged as triggered) equals the label (1 = triggered)."""
    y = _labels(labels)
    f = _flags(flags, len(y))
    if len(y) == 0:
        raise ValueError("accuracy of no prompts")
    return float((f == y).mean())


def tpr_fpr(flags: Sequence[bool], labels: Sequence[int]) -> tuple[float, float]:
    """``(TPR, FPR)``: the share of triggered prompts flagged and the share of clean prompts flagged (NaN for a
    class that has no prompt)."""
    y = _labels(labels)
    f = _flags(flags, len(y))
    tpr = float(f[y].mean()) if y.any() else float("nan")
    fpr = float(f[~y].mean()) if (~y).any() else float("nan")
    return tpr, fpr


# --- with intervals -------------------------------------------------------------------------------------------

def _stratified_estimates(s: np.ndarray, y: np.ndarray, statistics: dict, *, n_boot: int, seed: int, level: float,
                          details: dict) -> dict[str, Estimate]:
    """Each of ``statistics`` (name -> ``fn(scores, labels)``) with a stratified percentile-bootstrap interval: the
    negatives and the positives are resampled separately, each at its own size, and every statistic is computed on
    the same resamples (one seed), so the intervals of one row agree."""
    neg, pos = s[~y], s[y]

    def on_resample(fn):
        def stat(i_neg, i_pos):
            return fn(np.r_[neg[i_neg], pos[i_pos]], np.r_[np.zeros(len(i_neg), bool), np.ones(len(i_pos), bool)])
        return stat

    return {name: bootstrap_ci(on_resample(fn), sizes=(len(neg), len(pos)), n_boot=n_boot, seed=seed, level=level,
                               metric=name, details=details)
            for name, fn in statistics.items()}


def detection_estimates(scores: Sequence[float], labels: Sequence[int], threshold: float, *, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95) -> dict[str, Estimate]:
    """``{"auroc", "acc", "tpr", "fpr"}`` -> :class:`~erasure_lib.metrics.bootstrap.Estimate` (value on all the
    prompts, stratified percentile-bootstrap interval). A prompt is flagged when ``score > threshold``."""
    s, y = _scores_labels(scores, labels)
    threshold = float(threshold)
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")
    statistics = {
        "auroc": auroc,
        "acc": lambda ss, yy: float(((ss > threshold) == yy).mean()),
        "tpr": lambda ss, yy: float((ss > threshold)[yy].mean()),
        "fpr": lambda ss, yy: float((ss > threshold)[~yy].mean()),
    }
    details = {"threshold": threshold, "n_clean": int((~y).sum()), "n_triggered": int(y.sum()),
               "flag_rule": "score > threshold",
               "resampling": "stratified: clean and triggered prompts resampled separately"}
    return _stratified_estimates(s, y, {m: statistics[m] for m in DETECTION_METRICS}, n_boot=n_boot, seed=seed,
                                 level=level, details=details)


def detection_metrics(scores: Sequence[float], labels: Sequence[int], threshold: float, *, n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95, detector: str = "", attack: str = "") -> pd.DataFrame:
    """One table row: ``auroc, auroc_lo, auroc_hi, acc, acc_lo, acc_hi, tpr, ..., fpr_hi`` (the value on all the
    prompts and its stratified percentile-bootstrap interval at ``level``), then ``threshold, n_clean,
    n_triggered, n_boot, level, seed`` and the optional ``detector`` / ``attack`` names.

    ``scores``: higher = more likely triggered; ``labels``: 1 = triggered, 0 = clean (both classes needed);
    a prompt is flagged when ``score > threshold``. ``n_boot=0`` gives NaN intervals. Concatenate rows of several
    detectors / attacks with ``pd.concat``."""
    est = detection_estimates(scores, labels, threshold, n_boot=n_boot, seed=seed, level=level)
    row: dict = {}
    if detector:
        row["detector"] = detector
    if attack:
        row["attack"] = attack
    for name, e in est.items():
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = e.value, e.lo, e.hi
    first = est["auroc"].details
    row.update(threshold=float(threshold), n_clean=first["n_clean"], n_triggered=first["n_triggered"],
               n_boot=int(n_boot), level=float(level), seed=int(seed))
    return pd.DataFrame([row])


# --- AI-generated image detection (chapter 40): accuracy, AP, real-acc, fake-acc ------------------------------

def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Average precision of ``scores`` (higher = positive) for ``labels`` (1 = positive): the mean, over the
    positives, of the precision at the rank where each is retrieved, ``sum_k (R_k - R_{k-1}) P_k`` over the
    thresholds (the step-wise area under the precision-recall curve, as UnivFD and AIGIBench report it, no
    interpolation). Tied scores enter together (one threshold). Raises on NaN, mismatch, a single class."""
    s, y = _scores_labels(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]        # the last index of each distinct score
    tp_at, n_at = tp[last].astype(float), (last + 1).astype(float)
    precision = tp_at / n_at
    recall_gain = np.diff(np.r_[0.0, tp_at]) / tp[-1]
    return float((recall_gain * precision).sum())


def aigi_metrics(probs: Sequence[float], labels: Sequence[int], threshold: float = 0.5, *, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, Estimate]:
    """``{"acc", "ap", "real_acc", "fake_acc"}`` -> :class:`~erasure_lib.metrics.bootstrap.Estimate` of a detector
    of generated images: ``probs`` (probability of *generated*), ``labels`` 1 = generated, 0 = real; an image is
    called generated when ``prob > threshold`` (0.5, the papers' fixed threshold). Intervals: stratified
    percentile bootstrap (real and generated images resampled separately, the same resamples for every metric)."""
    s, y = _scores_labels(probs, labels)
    threshold = float(threshold)
    statistics = {
        "acc": lambda ss, yy: float(((ss > threshold) == yy).mean()),
        "ap": average_precision,
        "real_acc": lambda ss, yy: float((ss[~yy] <= threshold).mean()),
        "fake_acc": lambda ss, yy: float((ss[yy] > threshold).mean()),
    }
    details = {"threshold": threshold, "n_real": int((~y).sum()), "n_fake": int(y.sum()), "rule": "prob > threshold"}
    return _stratified_estimates(s, y, {m: statistics[m] for m in AIGI_METRICS}, n_boot=n_boot, seed=seed,
                                 level=level, details=details)
