"""Point estimates with percentile-bootstrap confidence intervals: the one result type of every metric.

Every metric of :mod:`erasure_lib.metrics` returns an :class:`Estimate`: the value on all the data, a
percentile-bootstrap interval, the sample size, and the provenance the reporting checklist asks for
(``specs/evaluation.md`` section 11: judge file and SHA-256, preset, feature extractor, scale).

The bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13) resamples the
independent units of an experiment with replacement:

* **items** (images) by default;
* **groups** (e.g. prompts, when each prompt is sampled with several seeds) when ``groups=`` is given: a
  cluster bootstrap, since images of one prompt are not independent;
* **several sets independently** for two-sample statistics such as FID (``sizes=(n_real, n_fake)``).

The interval is the plain percentile interval of the resampled statistic. It is deterministic given
``seed`` (a ``numpy.random.default_rng(seed)`` stream), so a rerun reproduces the table to the digit.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Estimate", "bootstrap_ci"]

# Resample at most this many indices in one vectorised block (memory bound for the simple-mean path).
_BLOCK = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """A metric value with its bootstrap interval and provenance.

    ``value`` is the statistic on all the data (not the bootstrap mean); ``lo``/``hi`` the percentile
    interval at ``level`` (``nan`` when no bootstrap was run); ``n`` the number of items measured.
    ``metric`` names what was measured, ``preset`` the named judge configuration (e.g. a NudeNet preset),
    ``method`` how the interval was obtained, and ``details`` everything else a report must state
    (judge file and SHA-256, feature extractor, scale, group count...).

    ``str(est)`` gives ``"0.42 [0.35, 0.49]"``; ``format(est, ".3f")`` applies a format to all three
    numbers; :meth:`as_dict` gives one flat row for a results table."""

    value: float
    lo: float
    hi: float
    n: int
    level: float = 0.95
    metric: str = ""
    preset: str = ""
    method: str = ""
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __format__(self, spec: str) -> str:
        spec = spec or ".2f"
        if np.isnan(self.lo) and np.isnan(self.hi):
            return format(self.value, spec)
        return f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"

    def __str__(self) -> str:
        return format(self, "")

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def covers(self, x: float) -> bool:
        """Whether ``x`` lies in the interval (inclusive)."""
        return bool(self.lo <= x <= self.hi)

    def as_dict(self) -> dict[str, Any]:
        """One flat row: value, lo, hi, n, level, metric, preset, method, then every entry of ``details``."""
        row: dict[str, Any] = {"value": self.value, "lo": self.lo, "hi": self.hi, "n": self.n, "level": self.level,
                               "metric": self.metric, "preset": self.preset, "method": self.method}
        for key, val in self.details.items():
            row[key if key not in row else f"detail_{key}"] = val
        return row


def _interval(boot: np.ndarray, level: float) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _group_index(groups: Sequence[Any], n: int) -> list[np.ndarray]:
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have one entry per item ({n}), got shape {groups.shape}")
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def _draw(rng: np.random.Generator, n: int, members: list[np.ndarray] | None) -> np.ndarray:
    """One resample of item indices: n items, or (cluster bootstrap) as many groups as there are."""
    if members is None:
        return rng.integers(0, n, size=n)
    picks = rng.integers(0, len(members), size=len(members))
    return np.concatenate([members[g] for g in picks])


def _describe(n_boot: int, seed: int, level: float, unit: str) -> str:
    if n_boot == 0:
        return "no bootstrap"
    return f"percentile bootstrap over {unit}, {n_boot} resamples, seed {seed}, {level:.0%}"


def bootstrap_ci(
    values_or_fn: Sequence[float] | np.ndarray | Callable[..., float],
    *,
    statistic: Callable[[np.ndarray], float] = np.mean,
    sizes: int | Sequence[int] | None = None,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metric: str = "",
    preset: str = "",
    details: Mapping[str, Any] | None = None,
    bias_correct: bool = False,
) -> Estimate:
    """Percentile-bootstrap confidence interval of a statistic.

    Two forms:

    * ``bootstrap_ci(values)``: ``values`` is one number per item (a 0/1 hit, a per-image score);
      the estimate is ``statistic(values)`` (default: the mean, i.e. a rate for 0/1 values).
    * ``bootstrap_ci(fn, sizes=(n_a, n_b, ...))``: ``fn(idx_a, idx_b, ...)`` computes the statistic
      from integer index arrays into each set; every set is resampled independently (two-sample
      statistics such as FID). ``fn`` is first called with the identity indices for the point value.

    ``groups`` (one label per item; single-set form only) switches to the cluster bootstrap: whole
    groups, e.g. all seeds of one prompt, are resampled together. ``n_boot=0`` skips the bootstrap
    (``lo``/``hi`` are ``nan``). Non-finite resampled statistics are dropped before the quantiles.

    ``bias_correct=True`` shifts the percentile interval by the bootstrap bias estimate
    (mean of the resampled statistics minus the point value), for statistics whose resamples are biased,
    such as FID (a resample repeats items, which inflates it); the shift is recorded in ``details``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    rng = np.random.default_rng(seed)
    info: dict[str, Any] = dict(details or {})

    if callable(values_or_fn):
        fn = values_or_fn
        if sizes is None:
            raise ValueError("the callable form needs sizes= (the number of items of each resampled set)")
        sizes = (int(sizes),) if np.isscalar(sizes) else tuple(int(s) for s in sizes)
        if any(s < 1 for s in sizes):
            raise ValueError(f"every set needs at least one item, got sizes {sizes}")
        members = None
        if groups is not None:
            if len(sizes) != 1:
                raise ValueError("groups= is only supported with a single resampled set")
            members = _group_index(groups, sizes[0])
            info["n_groups"] = len(members)
        value = float(fn(*(np.arange(s) for s in sizes)))
        boot = np.array([
            float(fn(*(_draw(rng, s, members) for s in sizes))) for _ in range(n_boot)
        ])
        n = sizes[-1]
        unit = "groups" if members is not None else ("each set independently" if len(sizes) > 1 else "items")
    else:
        x = np.asarray(values_or_fn, dtype=float).ravel()
        if x.size == 0:
            raise ValueError("cannot bootstrap an empty sample")
        n = x.size
        value = float(statistic(x))
        if groups is not None:
            members = _group_index(groups, n)
            info["n_groups"] = len(members)
            boot = np.array([float(statistic(x[_draw(rng, n, members)])) for _ in range(n_boot)])
            unit = "groups"
        elif statistic is np.mean:
            # vectorised: blocks of resamples at once
            boot = np.empty(n_boot)
            block = max(1, _BLOCK // n)
            for start in range(0, n_boot, block):
                k = min(block, n_boot - start)
                boot[start:start + k] = x[rng.integers(0, n, size=(k, n))].mean(axis=1)
            unit = "items"
        else:
            boot = np.array([float(statistic(x[rng.integers(0, n, size=n)])) for _ in range(n_boot)])
            unit = "items"

    lo, hi = _interval(boot, level) if n_boot > 0 else (float("nan"), float("nan"))
    method = _describe(n_boot, seed, level, unit)
    if bias_correct and n_boot > 0:
        bias = float(np.mean(boot[np.isfinite(boot)])) - value
        lo, hi = lo - bias, hi - bias
        info["bootstrap_bias"] = bias
        method += ", shifted by the bootstrap bias"
    return Estimate(value=value, lo=lo, hi=hi, n=int(n), level=level, metric=metric, preset=preset,
                    method=method, details=info)
