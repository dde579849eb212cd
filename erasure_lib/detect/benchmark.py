"""The backdoor-input detection protocol of chapter 30: which prompts each detector is trained and tested on, one
score per (detector, prompt), and AUROC / ACC with 95% intervals.

Protocol (SET's: specs/set.md sections 4-5, "Eval files: ... backdoor prompts, ... benign"), per backdoored model:

* **training prompts**: clean captions of the world's training distribution (toy: the caption grammar, never a
  held-out prompt); every detector that trains, trains *through the backdoored model itself* (one detector per
  attacked model, as SET's code does);
* **test prompts**: held-out prompts that can carry the trigger and whose own concept is not the backdoor's target,
  split in two disjoint halves of equal size: one half stays clean, the other is triggered (``Backdoor.poison``);
  equal numbers of clean and triggered prompts, as the reference's eval files;
* **privileged data**: T2IShield's CDA is supervised and gets triggered *training* captions too (the only detector
  that sees the trigger; stated in every table).

Scores are "higher = more likely triggered"; each detector's threshold is its own (SET: the (1 - nu)-quantile of the
clean training scores; FTT: the code's 2.5 or a clean-calibrated one; CDA: log-odds 0; UFID: a clean quantile).
:func:`summarize` gives AUROC, ACC, TPR and FPR with stratified bootstrap intervals over prompts
(:func:`erasure_lib.metrics.detection.detection_metrics`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DETECTORS = ("SET", "FTT", "CDA", "UFID")


@dataclass(frozen=True)
class DetectionSplit:
    """The prompts of one backdoored model's detection test (see the module docstring)."""

    train_clean: list[str]
    clean: list[str]
    triggered: list[str]
    cda_triggered: list[str] = field(default_factory=list)

    @property
    def test_prompts(self) -> list[str]:
        return self.clean + self.triggered

    @property
    def labels(self) -> np.ndarray:
        return np.r_[np.zeros(len(self.clean), int), np.ones(len(self.triggered), int)]


def toy_training_captions(n: int, seed: int = 0, sensitive: bool = False) -> list[str]:
    """``n`` distinct toy-grammar training captions (no held-out prompt; no nude person unless ``sensitive``)."""
    from ..toyworld.captions import sample_training_pairs
    out, k = [], 0
    while len(out) < n:
        scenes, captions = sample_training_pairs(4 * n, seed=seed + 1000 * k)
        seen = set(out)
        for scene, text in zip(scenes, captions):
            if (sensitive or not scene.nude) and text not in seen:
                out.append(text)
                seen.add(text)
        k += 1
    return out[:n]


def split_prompts(backdoor, pool: pd.DataFrame, train_clean: Sequence[str], n_test: int, seed: int = 0,
                  n_cda: int = 0, cda_pool: Sequence[str] = ()) -> DetectionSplit:
    """Draw the test halves from ``pool`` (a prompt table with ``prompt`` and ``target`` columns): prompts that can
    carry ``backdoor``'s trigger and do not already ask for its target, ``n_test`` clean and ``n_test`` triggered
    (disjoint prompts), at random with ``seed``. ``cda_pool``: clean training captions whose triggered versions CDA
    trains on (``n_cda`` of them, none a test prompt)."""
    usable = list(dict.fromkeys(p for p, t in zip(pool["prompt"], pool["target"])   # a prompt once, in any set
                                if t != backdoor.target and backdoor.poison(p) != p))
    if len(usable) < 2 * n_test:
        raise ValueError(f"only {len(usable)} prompts can carry the {backdoor.attack} trigger; {2 * n_test} needed "
                         f"for {n_test} clean + {n_test} triggered")
    order = np.random.default_rng(seed).permutation(len(usable))
    clean = [usable[i] for i in order[:n_test]]
    # distinct triggered prompts, none the triggered form of a clean test prompt (an EvilEdit phrase replaces the
    # subject, so two prompts can become one)
    taken, triggered = set(backdoor.poison(clean)), []
    for i in order[n_test:]:
        t = backdoor.poison(usable[i])
        if t not in taken:
            taken.add(t)
            triggered.append(t)
        if len(triggered) == n_test:
            break
    if len(triggered) < n_test:
        raise ValueError(f"only {len(triggered)} distinct triggered prompts can be made; {n_test} needed")
    cda = [p for p in cda_pool if backdoor.poison(p) != p][:n_cda]
    if n_cda and len(cda) < n_cda:
        raise ValueError(f"only {len(cda)} CDA training captions can carry the trigger; {n_cda} needed")
    return DetectionSplit(list(train_clean), clean, triggered, backdoor.poison(cda) if cda else [])


def run_detectors(pipe, backdoor, split: DetectionSplit, detectors: Sequence[str] = DETECTORS,
                  configs: dict | None = None, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Fit every detector through the backdoored ``pipe`` and score the test prompts. Returns one row per
    (detector, test prompt): ``attack, detector, prompt, label, score, flagged, threshold, fit_seconds,
    score_seconds``. ``configs``: per detector, its config (``SETConfig``, ``T2IShieldConfig``, ``UFIDConfig``;
    default: each one's ``.toy()``)."""
    from ..backdoors import applied
    from . import set as set_detector
    from .t2ishield import CDA, FTT, T2IShieldConfig
    from .ufid import UFID, UFIDConfig
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; valid: {', '.join(DETECTORS)}")
    configs = dict(configs or {})
    set_cfg = configs.get("SET") or set_detector.SETConfig.toy()
    shield_cfg = configs.get("T2IShield") or T2IShieldConfig.toy()
    ufid_cfg = configs.get("UFID") or UFIDConfig.toy()
    test = split.test_prompts
    rows = []
    with applied(pipe, backdoor):
        for name in detectors:
            t0 = time.perf_counter()
            if name == "SET":
                det = set_detector.fit(pipe, split.train_clean, set_cfg, seed=seed, progress=progress)
            elif name == "FTT":
                det = FTT(shield_cfg).fit(pipe, split.train_clean, progress=progress)
            elif name == "CDA":
                if not split.cda_triggered:
                    raise ValueError("CDA is supervised: the split has no triggered training captions (n_cda=0)")
                det = CDA(shield_cfg).fit(pipe, split.train_clean[:len(split.cda_triggered)], split.cda_triggered,
                                          progress=progress)
            else:
                det = UFID(ufid_cfg).fit(pipe, split.train_clean[:len(split.clean)], progress=progress)
            t1 = time.perf_counter()
            scores = np.asarray(det.score(pipe, test, progress=progress), float)
            t2 = time.perf_counter()
            threshold = float(det.threshold)
            for prompt, label, score in zip(test, split.labels, scores):
                rows.append({"attack": backdoor.attack, "detector": name, "prompt": prompt, "label": int(label),
                             "score": float(score), "flagged": bool(score > threshold), "threshold": threshold,
                             "fit_seconds": t1 - t0, "score_seconds": t2 - t1})
    return pd.DataFrame(rows)


def summarize(scores: pd.DataFrame, by: Sequence[str] = ("attack", "detector"), n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """AUROC / ACC / TPR / FPR with 95% stratified-bootstrap intervals per group of a :func:`run_detectors` table."""
    from ..metrics.detection import detection_metrics
    out = []
    for key, part in scores.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = detection_metrics(part["score"].to_numpy(), part["label"].to_numpy(), float(part["threshold"].iat[0]),
                                n_boot=n_boot, seed=seed)
        for col, value in zip(by, key):
            row.insert(list(by).index(col), col, value)
        out.append(row)
    return pd.concat(out, ignore_index=True)


__all__ = ["DETECTORS", "DetectionSplit", "run_detectors", "split_prompts", "summarize", "toy_training_captions"]
