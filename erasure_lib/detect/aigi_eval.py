"""Chapter 40's evaluation: detectors trained once (cached), scored on every generator, with intervals.

Protocol of UnivFD / NS-Net / AIGIBench (``specs/ns-net.md`` section 5): train on a few generators, test each
generator's images against real images, threshold 0.5; report accuracy, AP, real-acc and fake-acc per generator
and their mean over the generators. Here every generator of a test split is scored against the *same* real images
(the toy's test split draws every generator from the real images' captions: :func:`aigi_bench.build_split`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics.detection import AIGI_METRICS, aigi_metrics
from .aigi_bench import Split
from .ns_net import NSNet, SmallCNN, UnivFD, make_detector

CACHE_VERSION = 1
_CLASSES = {"ns_net": NSNet, "univfd": UnivFD, "cnn": SmallCNN}


def split_digest(split: Split) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(split.images).tobytes())
    h.update(np.ascontiguousarray(split.labels).tobytes())
    h.update(json.dumps([split.source.tolist(), split.captions]).encode())
    return h.hexdigest()[:16]


def _config_of(det) -> dict:
    from dataclasses import asdict
    return json.loads(det.config.to_json()) if isinstance(det, NSNet) else asdict(det.config)


def _prepared(name: str, backbone, train: Split, *, seed: int = 0, profile: str = "toy", cache_dir=None,
              **overrides):
    """``(detector, cache path or None, whether it still needs fitting)``: built in the caller's thread."""
    det = make_detector(name, backbone, seed=seed, profile=profile, **overrides)
    if cache_dir is None:
        return det, None, True
    from ..methods.cache import cache_folder, edit_key
    meta = {"v": CACHE_VERSION, "name": name, "kind": det.kind, "config": _config_of(det),
            "backbone": backbone.identity if det.kind != "cnn" else "", "train": split_digest(train)}
    path = cache_folder(cache_dir) / "detectors" / f"{det.kind}-{edit_key(meta)}.safetensors"
    if path.exists():
        loaded = _CLASSES[det.kind].load(path, backbone)
        seconds = path.with_suffix(".json")
        if seconds.exists():
            loaded.fit_seconds = json.loads(seconds.read_text())["fit_seconds"]
        return loaded, path, False
    return det, path, True


def _store(det, path: Path | None) -> None:
    if path is None:
        return
    from .._io import atomic_write_text
    path.parent.mkdir(parents=True, exist_ok=True)
    det.save(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"fit_seconds": det.fit_seconds}))


def fitted_detector(name: str, backbone, train: Split, *, seed: int = 0, profile: str = "toy", cache_dir=None,
                    progress: bool = False, **overrides):
    """``make_detector(name, ...)`` fitted on ``train``, read from ``cache_dir/detectors/`` when the same detector
    (name, resolved config, backbone, training split, this cache's version) was fitted before."""
    det, path, todo = _prepared(name, backbone, train, seed=seed, profile=profile, cache_dir=cache_dir, **overrides)
    if todo:
        det.fit(train.images, train.labels, progress=progress)
        _store(det, path)
    return det


def scores_by_generator(det, test: Split, generators) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{generator: (probs, labels)}``: the real images' scores, then the generator's. Each source is scored on its
    own (the real images once), so in NS-Net's ``batch`` mode a projection batch never mixes two sources and a
    generator's scores do not depend on which other generators are in the split."""
    real = test.of(["real"])
    real_probs = det.predict_proba(real.images)
    out = {}
    for g in generators:
        mine = test.of([g])
        if not len(mine):
            raise ValueError(f"the test split has no images of generator {g!r}")
        out[g] = (np.r_[real_probs, det.predict_proba(mine.images)],
                  np.r_[np.zeros(len(real), int), np.ones(len(mine), int)])
    return out


def fit_many(jobs, backbone, train: Split, *, workers: int | None = None, profile: str = "toy", cache_dir=None):
    """Several detectors, ``jobs`` a list of ``(name, seed, overrides)``, as :func:`fitted_detector` gives them;
    the ones not cached are fitted ``workers`` at a time in threads on the CPU (default:
    :func:`erasure_lib.sampling.sample_workers`, 2 on 2 cores, with one torch thread each while they run; torch
    releases the GIL in its kernels). Each detector is built in this thread and draws from its own seeded
    generators, so the results do not depend on ``workers``; a LoRA dropout above 0 draws from torch's global
    generator, so then one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from ..sampling import one_torch_thread, sample_workers
    jobs = [(n, s, dict(o)) for n, s, o in jobs]
    prepared = [_prepared(n, backbone, train, seed=s, profile=profile, cache_dir=cache_dir, **o) for n, s, o in jobs]
    todo = [(det, path) for det, path, need in prepared if need]
    workers = sample_workers(getattr(backbone, "device", None)) if workers is None else int(workers)
    if any(getattr(getattr(d, "config", None), "lora_dropout", 0.0) for d, _ in todo):
        workers = 1

    def fit(item):
        det, path = item
        det.fit(train.images, train.labels)
        _store(det, path)            # each as soon as it is fitted: a later failure loses nothing
        return det

    if workers <= 1 or len(todo) <= 1:
        for item in todo:
            fit(item)
    else:
        threads = min(workers, len(todo))
        with one_torch_thread(threads), ThreadPoolExecutor(threads, thread_name_prefix="fit") as pool:
            list(pool.map(fit, todo))
    return [det for det, _, _ in prepared]


def evaluate(det, test: Split, generators, *, n_boot: int = 1000, seed: int = 0, detector: str | None = None,
             scores: dict | None = None, **columns) -> pd.DataFrame:
    """One row per generator: ``acc, ap, real_acc, fake_acc`` and their ``_lo`` / ``_hi`` (stratified bootstrap),
    ``n_real``, ``n_fake``, plus ``detector`` and any extra ``columns``; ``scores``: :func:`scores_by_generator`'s
    output when already computed."""
    scores = scores_by_generator(det, test, generators) if scores is None else scores
    rows = []
    for g in generators:
        p, y = scores[g]
        est = aigi_metrics(p, y, n_boot=n_boot, seed=seed)
        row = {"detector": detector or det.name, **columns, "generator": g}
        for m in AIGI_METRICS:
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = est[m].value, est[m].lo, est[m].hi
        row.update(n_real=int((y == 0).sum()), n_fake=int((y == 1).sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def paired_accuracy_difference(scores_a: dict, scores_b: dict, generators, *, n_boot: int = 1000, seed: int = 0,
                               level: float = 0.95, threshold: float = 0.5):
    """Detector A's mean accuracy minus B's over ``generators`` and over the seeds (``scores_a`` / ``scores_b``:
    ``{seed: scores_by_generator(...)}``, the same seeds and test images), with a paired percentile-bootstrap interval
    over the **test images**: each resample draws the real images once (every generator is scored against the same
    real images) and each generator's images, and applies the same draw to both detectors and every seed; the
    seeds' spread enters through the mean over seeds in every resample. Returns an
    :class:`~erasure_lib.metrics.bootstrap.Estimate`."""
    from ..metrics.bootstrap import Estimate
    seeds = sorted(scores_a)
    if sorted(scores_b) != seeds or not seeds:
        raise ValueError("need both detectors' scores for the same seeds")
    generators = list(generators)
    first = scores_a[seeds[0]]
    n_real = int((first[generators[0]][1] == 0).sum())
    n_fake = {g: int((first[g][1] == 1).sum()) for g in generators}

    def hits(scores, s, g):
        p, y = scores[s][g]
        if len(y) != n_real + n_fake[g] or (y[:n_real] != 0).any():
            raise ValueError("scores must list the real images first, the same ones for every generator and seed")
        return (p > threshold) == (y == 1)

    ha = {(s, g): hits(scores_a, s, g) for s in seeds for g in generators}
    hb = {(s, g): hits(scores_b, s, g) for s in seeds for g in generators}

    def diff(i_real, i_fake):
        out = []
        for s in seeds:
            for g in generators:
                a, b = ha[(s, g)], hb[(s, g)]
                fa, fb = a[n_real:][i_fake[g]], b[n_real:][i_fake[g]]
                n = len(i_real) + len(i_fake[g])
                out.append((a[:n_real][i_real].sum() + fa.sum() - b[:n_real][i_real].sum() - fb.sum()) / n)
        return float(np.mean(out))

    value = diff(np.arange(n_real), {g: np.arange(n) for g, n in n_fake.items()})
    rng = np.random.default_rng(seed)
    boot = np.array([diff(rng.integers(n_real, size=n_real), {g: rng.integers(n, size=n) for g, n in n_fake.items()})
                     for _ in range(n_boot)]) if n_boot else np.array([])
    lo, hi = (np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if len(boot) else (np.nan, np.nan))
    return Estimate(value=value, lo=float(lo), hi=float(hi), n=len(seeds) * len(generators), level=level,
                    metric="accuracy difference (A - B)", method="paired percentile bootstrap over the test images",
                    details={"resampling": "test images (real once, each generator's), paired across detectors and "
                                           "seeds", "n_boot": n_boot, "seeds": seeds, "generators": generators})


__all__ = ["evaluate", "fit_many", "fitted_detector", "paired_accuracy_difference",
           "scores_by_generator", "split_digest"]
