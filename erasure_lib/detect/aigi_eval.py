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
    from ..methods.cache import cache_folder
    meta = {"v": CACHE_VERSION, "name": name, "kind": det.kind, "config": _config_of(det),
            "backbone": getattr(backbone, "source", ""), "train": split_digest(train)}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_folder(cache_dir) / "detectors" / f"{det.kind}-{key}.safetensors"
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
    """``{generator: (probs, labels)}``: the real images' scores and the generator's. The whole split is scored
    once, in its order (a block per source): in NS-Net's ``batch`` mode a projection batch then never mixes two
    sources when the blocks are multiples of the batch size (the toy's 256), as scoring each generator apart would."""
    probs = det.predict_proba(test.images)
    real = test.source == "real"
    out = {}
    for g in generators:
        mine = test.source == g
        if not mine.any():
            raise ValueError(f"the test split has no images of generator {g!r}")
        out[g] = (np.r_[probs[real], probs[mine]], np.r_[np.zeros(real.sum(), int), np.ones(mine.sum(), int)])
    return out


def fit_many(jobs, backbone, train: Split, *, workers: int | None = None, profile: str = "toy", cache_dir=None):
    """Several detectors, ``jobs`` a list of ``(name, seed, overrides)``, as :func:`fitted_detector` gives them;
    the ones not cached are fitted ``workers`` at a time in threads on the CPU (default:
    :func:`erasure_lib.sampling.sample_workers`, 2 on 2 cores with one torch thread each; torch releases the GIL in
    its kernels). Each detector is built in this thread and draws from its own seeded generators, so the results do
    not depend on ``workers``; a LoRA dropout above 0 draws from torch's global generator, so then one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from ..sampling import sample_workers
    jobs = [(n, s, dict(o)) for n, s, o in jobs]
    prepared = [_prepared(n, backbone, train, seed=s, profile=profile, cache_dir=cache_dir, **o) for n, s, o in jobs]
    todo = [(det, path) for det, path, need in prepared if need]
    workers = sample_workers() if workers is None else int(workers)
    if any(getattr(getattr(d, "config", None), "lora_dropout", 0.0) for d, _ in todo):
        workers = 1

    def fit(item):
        det, path = item
        det.fit(train.images, train.labels)
        return det, path

    if workers <= 1 or len(todo) <= 1:
        done = [fit(item) for item in todo]
    else:
        with ThreadPoolExecutor(min(workers, len(todo)), thread_name_prefix="fit") as pool:
            done = list(pool.map(fit, todo))
    for det, path in done:
        _store(det, path)
    return [det for det, _, _ in prepared]


def evaluate(det, test: Split, generators, *, n_boot: int = 1000, seed: int = 0, detector: str | None = None,
             **columns) -> pd.DataFrame:
    """One row per generator: ``acc, ap, real_acc, fake_acc`` and their ``_lo`` / ``_hi`` (stratified bootstrap),
    ``n_real``, ``n_fake``, plus ``detector`` and any extra ``columns``."""
    rows = []
    for g, (p, y) in scores_by_generator(det, test, generators).items():
        est = aigi_metrics(p, y, n_boot=n_boot, seed=seed)
        row = {"detector": detector or det.name, **columns, "generator": g}
        for m in AIGI_METRICS:
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = est[m].value, est[m].lo, est[m].hi
        row.update(n_real=int((y == 0).sum()), n_fake=int((y == 1).sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def mean_over(table: pd.DataFrame, generators, by=("detector",)) -> pd.DataFrame:
    """The mean of each metric over ``generators`` per group (the papers' "mean" column)."""
    part = table[table.generator.isin(list(generators))]
    return part.groupby(list(by), sort=False)[list(AIGI_METRICS)].mean().reset_index()


def paired_difference(a, b, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Mean of ``a - b`` over paired units (chapter 40: one unit per (training seed, unseen generator), the two
    detectors' mean accuracy on the same test images) with a percentile-bootstrap interval over the units
    (:class:`~erasure_lib.metrics.bootstrap.Estimate`)."""
    from ..metrics.bootstrap import bootstrap_ci
    d = np.asarray(a, float) - np.asarray(b, float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError("need at least two paired units")
    return bootstrap_ci(d, n_boot=n_boot, seed=seed, level=level, metric="paired difference (A - B)")


def save_path(cache_dir, name: str) -> Path:
    from ..methods.cache import cache_folder
    return cache_folder(cache_dir) / name


__all__ = ["evaluate", "fit_many", "fitted_detector", "mean_over", "paired_difference", "scores_by_generator", "split_digest"]
