"""MCP: how well look-alike concepts survive an erasure (TICoE's fidelity metric).

MCP ("Morpho-Contextual Concept Preservation") comes from TICoE (Li et al., "Beyond Text Prompts: Precise
Concept Erasure through Text-Image Collaboration", CVPR 2026, arXiv 2604.15829; code ``OpenAscent-L/TICoE``).
After erasing a concept c, generate images of concepts that are semantically distinct from c but look or
occur like it (gun -> camera / phone / umbrella; tench -> whale / goldfish), and report the share of those
images that a concept-specific classifier recognises as the concept they were prompted for. The clean
model's value on the same prompts and seeds is the reference (``specs/ticoe.md`` section 8; the paper's
classifiers, prompts and counts are in its supplement and not public, so this is the implementable
definition of the spec, not a reproduction of the paper's numbers).

On the toy profile the look-alike pairs are :data:`erasure_lib.toyworld.world.LOOKALIKES` (tench/goldfish,
church/house, parachute/umbrella, gun/camera), the prompts the held-out ``"lookalike"`` set of
:func:`erasure_lib.toyworld.captions.prompt_set` (see :func:`lookalike_prompts`) and the judge the toy
classifier's object head (argmax == the prompted neighbour).

Report MCP, MCP_clean on the same prompts and seeds, and their ratio (:func:`mcp` with ``clean_images=``;
the interval of the ratio is a paired bootstrap), per neighbour concept with :func:`mcp_table`. With any other
judge (the sd14 profile's CLIP zero-shot), :func:`mcp_from_hits` takes the per-image judgements directly.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..toyworld.world import LOOKALIKES
from ._common import ImageBatch, check_groups
from .bootstrap import Estimate, bootstrap_ci
from .concept import _judge_details, _toy_classifier, predict_concepts, resolve_concept

__all__ = ["lookalike_prompts", "mcp", "mcp_from_hits", "mcp_table"]


def lookalike_prompts(erased: str | None = None) -> pd.DataFrame:
    """The toy look-alike prompt set (``prompt, target, erased, ...``): prompts of the neighbour of each
    object; with ``erased``, only the prompts of that object's neighbour. ``target`` is the neighbour."""
    from ..toyworld.captions import prompt_set
    table = prompt_set("lookalike")
    table["erased"] = table["target"].map(LOOKALIKES)
    if erased is not None:
        if erased not in LOOKALIKES:
            raise ValueError(f"no look-alike pair for {erased!r}; objects with one: {', '.join(LOOKALIKES)}")
        table = table[table["erased"] == erased].reset_index(drop=True)
    return table


def _intended(intended: str | Sequence[str], n: int) -> list[str]:
    labels = [intended] * n if isinstance(intended, str) else [str(c) for c in intended]
    if len(labels) != n:
        raise ValueError(f"need one intended concept per image: {n} images, {len(labels)} concepts")
    for c in set(labels):
        head, _ = resolve_concept(c)
        if head != "object":
            raise ValueError(f"MCP judges objects; {c!r} is a {head} concept")
    return labels


def _hits(images: ImageBatch | None, predictions: pd.DataFrame | None, labels: list[str], clf) -> np.ndarray:
    if predictions is None:
        if images is None:
            raise ValueError("give images or predictions")
        predictions = predict_concepts(images, clf)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} intended concepts")
    return (predictions["object"].to_numpy() == np.asarray(labels)).astype(float)


def mcp(
    images: ImageBatch | None,
    intended: str | Sequence[str],
    classifier=None,
    *,
    clean_images: ImageBatch | None = None,
    predictions: pd.DataFrame | None = None,
    clean_predictions: pd.DataFrame | None = None,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Share of look-alike images recognised as the concept they were prompted for (MCP, in [0, 1]).

    ``intended``: the prompted neighbour concept, one per image (or one for all). ``clean_images``: the
    clean model's images of the same prompts and seeds; then ``details`` also holds ``mcp_clean`` and
    ``mcp_ratio`` (= MCP / MCP_clean) with paired-bootstrap intervals. Precomputed
    :func:`.concept.predict_concepts` tables may replace either image set."""
    clf = classifier if classifier is not None else _toy_classifier()
    if predictions is None:
        if images is None:
            raise ValueError("give images or predictions")
        predictions = predict_concepts(images, clf)
    labels = _intended(intended, len(predictions))
    hits = _hits(None, predictions, labels, clf)
    clean = None
    if clean_images is not None or clean_predictions is not None:
        clean = _hits(clean_images, clean_predictions, labels, clf)
    return mcp_from_hits(hits, clean, groups=groups, n_boot=n_boot, seed=seed, level=level, preset="toy_classifier",
                         details={"intended": ",".join(sorted(set(labels))),
                                  "rule": "argmax of the object head == the prompted concept", **_judge_details(clf)})


def mcp_from_hits(hits, clean_hits=None, *, groups: Sequence[Any] | None = None, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95, preset: str = "", details: dict | None = None) -> Estimate:
    """MCP from per-image judgements of any judge (the toy classifier, CLIP zero-shot on sd14): ``hits[i]`` says
    whether look-alike image ``i`` shows the concept it was prompted for; ``clean_hits`` the same for the clean
    model's image of the same prompt and seed. ``details`` then holds ``mcp_clean`` and ``mcp_ratio`` (MCP /
    MCP_clean), with paired-bootstrap intervals over ``groups`` (prompts: the two models' images of a prompt are
    resampled together)."""
    hits = np.asarray(hits, dtype=float)
    if hits.ndim != 1 or len(hits) == 0:
        raise ValueError(f"MCP needs a non-empty 1-d array of hits, got shape {hits.shape}")
    check_groups(groups, len(hits))
    details = dict(details or {})
    if clean_hits is not None:
        clean = np.asarray(clean_hits, dtype=float)
        if clean.shape != hits.shape:
            raise ValueError(f"{len(hits)} hits but {len(clean)} clean hits: MCP pairs the same prompts and seeds")
        kw = dict(groups=groups, n_boot=n_boot, seed=seed, level=level)
        clean_est = bootstrap_ci(clean, **kw)
        both = np.stack([hits, clean], axis=1)
        ratio = bootstrap_ci(lambda idx: _ratio(both[idx]), sizes=len(hits), **kw)
        details.update(mcp_clean=clean_est.value, mcp_clean_lo=clean_est.lo, mcp_clean_hi=clean_est.hi,
                       mcp_ratio=ratio.value, mcp_ratio_lo=ratio.lo, mcp_ratio_hi=ratio.hi)
    return bootstrap_ci(hits, groups=groups, n_boot=n_boot, seed=seed, level=level, metric="mcp", preset=preset,
                        details=details)


def _ratio(pairs: np.ndarray) -> float:
    clean = pairs[:, 1].mean()
    return float(pairs[:, 0].mean() / clean) if clean > 0 else float("nan")


def mcp_table(
    images: ImageBatch | None,
    intended: Sequence[str],
    classifier=None,
    *,
    clean_images: ImageBatch | None = None,
    predictions: pd.DataFrame | None = None,
    clean_predictions: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """MCP per neighbour concept (TICoE's Table B layout: ``erased -> neighbour``), one row each."""
    clf = classifier if classifier is not None else _toy_classifier()
    if predictions is None:
        predictions = predict_concepts(images, clf)
    if clean_predictions is None and clean_images is not None:
        clean_predictions = predict_concepts(clean_images, clf)
    labels = np.asarray(_intended(intended, len(predictions)))
    rows = []
    for neighbour in sorted(set(labels)):
        keep = labels == neighbour
        sub_clean = None if clean_predictions is None else clean_predictions[keep].reset_index(drop=True)
        est = mcp(None, neighbour, clf, predictions=predictions[keep].reset_index(drop=True),
                  clean_predictions=sub_clean, n_boot=n_boot, seed=seed, level=level)
        rows.append({"erased": LOOKALIKES.get(neighbour, ""), "neighbour": neighbour, **est.as_dict()})
    return pd.DataFrame(rows)
