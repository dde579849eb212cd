"""The erasure tasks the chapters share: which concepts are erased, how the evaluation prompts split around each
one, and the baselines' standard edits.

One concept of each family of the toy world (:data:`TOY_CONCEPTS`): the sensitive concept ("a nude person"; its
implicit prompts never use the keyword), a style (its invented artist "vincent vael", whose style is "starry"; the
implicit prompts name the style, not the artist) and an object ("church", whose look-alike is "house").
:func:`concept_masks` splits a judged evaluation table into the rows the papers' tables report for a concept:
explicit and implicit prompts of the concept (efficacy), other objects, other styles and look-alikes (usability)
and benign prompts (FID, CLIP score). :func:`baseline_edit` makes the ESD-x, ESD-u and UCE edits with the library's
default hyper-parameters, cached by their metadata (:func:`~erasure_lib.methods.cache.cached_edit`), so that
chapter 00's calibration and chapter 10's main table evaluate the very same edits and train each once.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .methods import esd, uce
from .methods.cache import cached_edit
from .methods.edits import Edit
from .toyworld.world import LOOKALIKES

TOY_CONCEPTS: dict[str, dict] = {
    "nudity": dict(prompt="a nude person", target="nude", uce_guide="a person", uce_preserve=[]),
    "starry style": dict(prompt="vincent vael", target="starry", uce_guide="", uce_preserve=["a church", "a person"]),
    "church": dict(prompt="church", target="church", uce_guide="", uce_preserve=["house", "a person"]),
}
EVALUATION_SETS = ("sensitive_explicit", "sensitive_implicit", "style", "explicit_object", "lookalike", "benign")
BASELINES = ("ESD-x", "ESD-u", "UCE")


def _concept(name: str) -> dict:
    if name not in TOY_CONCEPTS:
        raise ValueError(f"unknown concept {name!r}; valid: {', '.join(TOY_CONCEPTS)}")
    return TOY_CONCEPTS[name]


def evaluation_prompts(profile: str = "toy") -> pd.DataFrame:
    """Every held-out evaluation set of the profile in one table, ``case_id`` made unique as ``set/case``."""
    from .prompts import load_prompts
    if profile != "toy":
        raise ValueError(f"the shared erasure tasks are defined for the toy profile only (got {profile!r})")
    prompts = pd.concat([load_prompts(s, profile=profile) for s in EVALUATION_SETS], ignore_index=True)
    prompts["case_id"] = [f"{s}/{c}" for s, c in zip(prompts.source, prompts.case_id)]
    return prompts


def concept_masks(name: str, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean row masks of a (judged) evaluation table for concept ``name``: ``explicit``, ``implicit``,
    ``other objects``, ``other styles``, ``look-alikes`` and ``benign``."""
    c = _concept(name)
    src, tgt, text = rows.source, rows.target, rows.prompt
    if name == "nudity":
        m = {"explicit": src == "sensitive_explicit", "implicit": src == "sensitive_implicit",
             "other objects": src == "explicit_object", "other styles": src == "style"}
    elif name == "starry style":
        starry = (src == "style") & (tgt == "starry")
        m = {"explicit": starry & text.str.contains("vincent vael"),
             "implicit": starry & text.str.contains("starry style"),
             "other objects": src == "explicit_object", "other styles": (src == "style") & (tgt != "starry")}
    else:
        target = c["target"]
        m = {"explicit": (src == "explicit_object") & (tgt == target), "implicit": pd.Series(False, index=rows.index),
             "other objects": (src == "explicit_object") & ~tgt.isin([target, LOOKALIKES[target]]),
             "other styles": src == "style"}
    m["look-alikes"] = (src == "lookalike") & (tgt != c["target"])
    m["benign"] = src == "benign"
    return {k: np.asarray(v, bool) for k, v in m.items()}


def baseline_edit(pipe, method: str, name: str, seed: int = 0, cache_dir=None,
                  esd_overrides: Mapping | None = None) -> Edit:
    """The standard ``method`` edit (``"ESD-x"``, ``"ESD-u"`` or ``"UCE"``) of concept ``name``; ESD edits are
    cached in ``cache_dir`` by their metadata (UCE is a closed form and takes a fraction of a second)."""
    c = _concept(name)
    if method == "UCE":
        return uce.erase(pipe, [c["prompt"]], preserve=c["uce_preserve"], guide=c["uce_guide"])
    if method not in ("ESD-x", "ESD-u"):
        raise ValueError(f"unknown baseline {method!r}; valid: {', '.join(BASELINES)}")
    cfg = esd.ESDConfig(parameter_set=method.lower(), seed=seed, **dict(esd_overrides or {}))
    return cached_edit(cache_dir, esd.metadata(c["prompt"], cfg),
                       lambda: esd.erase(pipe, c["prompt"], cfg, progress=False))


__all__ = ["BASELINES", "EVALUATION_SETS", "TOY_CONCEPTS", "baseline_edit", "concept_masks", "evaluation_prompts"]
