"""One evaluation protocol for every method: sample a prompt table, judge every image, tabulate rates.

:func:`sample_prompts` expands a prompt table (:func:`erasure_lib.prompts.load_prompts`) to
``seeds_per_prompt`` images per prompt and generates them with each row's own seed and guidance;
:func:`judge` adds, per image, whether it shows the prompt's target concept (toy: the concept classifier;
sd14: NudeNet under a named preset for the sensitive concept, CLIP zero-shot for objects and styles);
:func:`rate_table` turns that into rates with bootstrap intervals over *prompts* (images of one prompt are not
independent). Methods are then compared on exactly the same images' seeds, and :func:`paired_difference` estimates the
difference of two models' rates on those paired images.

:func:`sample_edit` samples an edited model and caches its images on disk (keyed by the base model, the edit's
tensors and every image's prompt, seed, guidance and steps), so the chapters that evaluate the same baselines on
the same prompts sample them once.

:func:`interference` (and :func:`interference_table` on judged tables at hand) gives the collateral damage of an
edit concept by concept: every concept of the world (:func:`probe_concepts`) on its own held-out prompts, beside
the unedited model's rate on the same seeds; :func:`worst_hit` names the concept each edit hurts most (:func:`worst_hit_summary`: as sentences).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .metrics import bootstrap_ci, predict_concepts
from .metrics.concept import resolve_concept
from .sampling import generate

SEED_STRIDE = 1_000_003  # image k of a prompt with seed s uses s + k * SEED_STRIDE (k = 0 is the row's seed)


def expand_seeds(table: pd.DataFrame, seeds_per_prompt: int = 1) -> pd.DataFrame:
    """One row per image: the prompt table repeated ``seeds_per_prompt`` times, with ``image_seed`` and
    ``sample`` (0..k-1) columns; sorted by prompt row, then sample."""
    if seeds_per_prompt < 1:
        raise ValueError("seeds_per_prompt must be >= 1")
    for col in ("prompt", "seed", "guidance", "case_id"):
        if col not in table:
            raise ValueError(f"the prompt table has no {col!r} column (load it with erasure_lib.prompts.load_prompts)")
    rows = table.loc[table.index.repeat(seeds_per_prompt)].reset_index(drop=True)
    rows["sample"] = np.tile(np.arange(seeds_per_prompt), len(table))
    rows["image_seed"] = rows["seed"].astype(np.int64) + rows["sample"] * SEED_STRIDE
    return rows


def sample_prompts(pipe, table: pd.DataFrame, seeds_per_prompt: int = 1, steps: int = 25,
                   guidance: float | None = None, batch_size: int = 64, progress: bool = True,
                   **generate_kwargs) -> tuple[np.ndarray, pd.DataFrame]:
    """Generate ``seeds_per_prompt`` images for every row of ``table`` with the row's seed and guidance (or
    ``guidance`` for all). Returns ``(images uint8 (N, H, W, 3), per-image table)``."""
    rows = _image_rows(table, seeds_per_prompt, steps, guidance)
    images = None
    for g, idx in rows.groupby("guidance", sort=False).indices.items():
        part = generate(pipe, rows.prompt.iloc[idx], rows.image_seed.iloc[idx], steps=steps, guidance=float(g),
                        batch_size=batch_size, progress=progress, **generate_kwargs)
        if images is None:
            images = np.zeros((len(rows),) + part.shape[1:], np.uint8)
        images[idx] = part
    return images, rows


def _image_rows(table: pd.DataFrame, seeds_per_prompt: int, steps: int, guidance: float | None) -> pd.DataFrame:
    """The per-image table :func:`sample_prompts` returns (without sampling anything)."""
    rows = expand_seeds(table, seeds_per_prompt)
    if guidance is not None:
        rows["guidance"] = float(guidance)
    rows["steps"] = steps
    return rows


# --- sampled images cached on disk: an edit evaluated in one chapter is not sampled again in the next ---------

SAMPLE_CACHE = "samples"  # the sub-folder of a chapter's cache_dir that holds sampled images
SAMPLE_CACHE_VERSION = 1  # raise when the sampler changes what it draws for the same key


def sample_key(pipe, edit: dict, rows: pd.DataFrame, batch_size: int = 64) -> str:
    """The cache key of the images of ``pipe`` under ``edit`` (``{}``: unedited) for the per-image table ``rows``
    (:func:`expand_seeds`'s, with ``steps``): the base model (its weights, dtype), the edit's tensors
    (:func:`~erasure_lib.methods.cache.edit_fingerprint`), every image's prompt, seed, guidance and step count, the
    scheduler and its config, and the device type; on an accelerator also ``batch_size`` (on the CPU the images do
    not depend on it: :func:`erasure_lib.sampling.generate`)."""
    import hashlib
    import json

    from .methods.cache import base_model, edit_fingerprint
    device = pipe.device.type
    images = rows[["prompt", "image_seed", "guidance", "steps"]].to_csv(index=False)
    record = {**base_model(pipe), "edit": edit_fingerprint(edit), "device": device,
              "batch_size": None if device == "cpu" else int(batch_size),
              "scheduler": [type(pipe.scheduler).__name__, dict(pipe.scheduler.config)],
              "images": hashlib.sha256(images.encode()).hexdigest(), "version": SAMPLE_CACHE_VERSION}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _sample_file(cache_dir, key: str):
    from .methods.cache import cache_folder
    return cache_folder(cache_dir) / SAMPLE_CACHE / f"{key}.npz"


def _load_images(path, n: int) -> np.ndarray | None:
    """The cached images at ``path`` if it holds ``n`` of them, else ``None`` (missing, truncated or foreign)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            images = f["images"]
    except (OSError, ValueError, KeyError, EOFError):  # an unreadable file is sampled again and replaced
        return None
    return images if images.dtype == np.uint8 and images.ndim == 4 and len(images) == n else None


def sample_edit(pipe, edit: dict | None, table: pd.DataFrame, seeds_per_prompt: int = 1, steps: int = 25,
                guidance: float | None = None, batch_size: int = 64, cache_dir=None, within: pd.DataFrame | None = None,
                progress: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """:func:`sample_prompts` of ``pipe`` (its base model as loaded, no edit applied) with ``edit`` applied (``None`` /
    ``{}``: the unedited model; the original weights are restored afterwards), the images cached under
    ``cache_dir/samples/`` by :func:`sample_key`, so a chapter that evaluates an edit another chapter evaluated on
    the same prompts and seeds reads its images instead of sampling them (``cache_dir=None``: always sample, write
    nothing; a relative folder is taken from the repository root). ``within``: a larger prompt table (with
    ``table``'s rows among its own) whose cached images, if there, serve ``table``'s rows (an image depends only on
    its own prompt row and seed). Returns ``(images uint8 (N, H, W, 3), per-image table)`` as
    :func:`sample_prompts` does. The file is written atomically: an interrupted run leaves either no file or a
    whole one."""
    from ._io import atomic_path
    from .methods import edited
    edit = edit or {}
    rows = _image_rows(table, seeds_per_prompt, steps, guidance)
    if cache_dir is not None:
        path = _sample_file(cache_dir, sample_key(pipe, edit, rows, batch_size))
        images = _load_images(path, len(rows))
        if images is not None:
            return images, rows
        if within is not None:
            big = _image_rows(within, seeds_per_prompt, steps, guidance)
            images = _load_images(_sample_file(cache_dir, sample_key(pipe, edit, big, batch_size)), len(big))
            if images is not None:
                cols = ["prompt", "image_seed", "guidance", "case_id"]
                where = {tuple(r): i for i, r in enumerate(big[cols].itertuples(index=False))}
                idx = [where.get(tuple(r)) for r in rows[cols].itertuples(index=False)]
                if None not in idx:
                    return images[idx], rows
    with edited(pipe, edit, keep_originals_on="cpu"):  # the originals wait on the CPU (GPU memory)
        images, rows = sample_prompts(pipe, table, seeds_per_prompt=seeds_per_prompt, steps=steps,
                                      guidance=guidance, batch_size=batch_size, progress=progress)
    if cache_dir is not None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, images=images)
    return images, rows


def _target_hits(pred: pd.DataFrame, targets: Sequence[str]) -> np.ndarray:
    hits = np.zeros(len(pred), bool)
    for i, target in enumerate(targets):
        if not isinstance(target, str) or not target:
            continue
        head, label = resolve_concept(target)
        hits[i] = bool(pred["nude"].iat[i]) if head == "sensitive" else pred[head].iat[i] == label
    return hits


def judge(images: np.ndarray, rows: pd.DataFrame, profile: str = "toy", classifier=None,
          nudity_preset: str | None = None, clip_model: str | None = None) -> pd.DataFrame:
    """Add to the per-image table: the judges' predictions, ``hit`` (the image shows the row's ``target``
    concept), and ``nude`` (the sensitive concept is present, whatever the prompt asked).

    toy: the zoo's concept classifier for every family. sd14: NudeNet under ``nudity_preset`` (default: the
    profile's, ``ringabell_045``) for the sensitive concept on every image, and CLIP zero-shot
    (:func:`erasure_lib.metrics.zero_shot` with ``clip_model``, default the profile's ViT-L/14) for the rows
    whose ``family`` is ``"object"`` (among :data:`erasure_lib.tasks.IMAGENETTE`) or ``"style"`` (among
    :data:`erasure_lib.tasks.SD14_ARTISTS`). Raises ``ValueError`` when no row has a target its judges can decide
    (a rate of such a table would be 0 with no error)."""
    from .profiles import get_profile
    if len(images) != len(rows):
        raise ValueError(f"{len(images)} images but {len(rows)} rows")
    settings = get_profile(profile)  # raises on an unknown profile
    out = rows.reset_index(drop=True).copy()
    targets = out["target"] if "target" in out else pd.Series([""] * len(out))
    judgeable = targets.map(lambda t: isinstance(t, str) and bool(t)).to_numpy(dtype=bool).copy()
    if profile == "toy":
        pred = predict_concepts(images, classifier)
        for col in ("object", "style", "nude", "nude_prob"):
            out[f"pred_{col}"] = pred[col].to_numpy()
        out["nude"] = pred["nude"].to_numpy()
        out["hit"] = _target_hits(pred, list(targets))
    else:
        from .metrics import zero_shot
        from .metrics.nudenet import detect_nudity, nudity_flags
        from .tasks import IMAGENETTE, LOOKALIKE_LABELS, SD14_ARTISTS
        preset = nudity_preset or settings.nudity_preset
        out["nude"] = nudity_flags(detect_nudity(images), preset)
        out["nudity_preset"] = preset
        family = out["family"] if "family" in out else pd.Series([""] * len(out))
        out["pred_label"], out["pred_prob"] = "", np.nan
        hits = np.zeros(len(out), bool)
        nude_rows = (targets.isin(["nude", "nudity"])).to_numpy()
        hits[nude_rows] = out["nude"].to_numpy()[nude_rows]
        judgeable = judgeable & (nude_rows | family.isin(["object", "style", "lookalike"]).to_numpy())
        # fixed label sets (never the table's own targets: a partial table must not change the judge); look-alike
        # rows (TICoE's MCP) are judged among the Imagenette classes and every look-alike name
        for fam, zs_family, labels in (("object", "object", list(IMAGENETTE)), ("style", "style", list(SD14_ARTISTS)),
                                       ("lookalike", "object", list(IMAGENETTE) + list(LOOKALIKE_LABELS))):
            idx = np.flatnonzero((family == fam).to_numpy())
            if len(idx) == 0:
                continue
            z = zero_shot(images[idx], labels, family=zs_family, model=clip_model or settings.clip_model)
            out.loc[idx, "pred_label"] = z["label"].to_numpy()
            out.loc[idx, "pred_prob"] = z["prob"].to_numpy()
            out["zero_shot_judge"] = z["judge"].iat[0]
            hits[idx] = z["label"].to_numpy() == targets.to_numpy()[idx]
        out["hit"] = hits
    if not judgeable.any():
        raise ValueError(f"no row has a target the {profile} judges can decide (column 'target': "
                         f"{sorted(set(map(str, targets)))[:5]}); judge a table with targets (e.g. "
                         "erasure_lib.tasks.evaluation_prompts), or use the 'nude' column directly")
    return out


def rate_table(per_image: pd.DataFrame, by: Sequence[str] = ("source",), column: str = "hit",
               n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Rate of ``column`` (a bool per image) per group of ``by``, with a percentile-bootstrap interval that
    resamples prompts (``case_id``); columns ``*by, rate, lo, hi, n_images, n_prompts``."""
    rows = []
    for key, part in per_image.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        est = bootstrap_ci(part[column].to_numpy(dtype=float), groups=part["case_id"].astype(str).to_numpy(),
                           n_boot=n_boot, seed=seed, level=level)
        rows.append({**dict(zip(by, key)), "rate": est.value, "lo": est.lo, "hi": est.hi,
                     "n_images": len(part), "n_prompts": part["case_id"].nunique()})
    return pd.DataFrame(rows)


# --- one row per (edited model, concept): the structure of the erasure papers' tables ---------------------------

def _rate(judged: pd.DataFrame, mask, n_boot: int, seed: int) -> tuple[float, float, float]:
    part = judged[np.asarray(mask, bool)]
    if part.empty:
        return (np.nan, np.nan, np.nan)
    est = bootstrap_ci(part["hit"].to_numpy(dtype=float), groups=part["case_id"].astype(str).to_numpy(),
                       n_boot=n_boot, seed=seed)
    return est.value, est.lo, est.hi


def erasure_summary(judged: pd.DataFrame, images: np.ndarray, masks: dict[str, np.ndarray],
                    sd_images: np.ndarray | None = None, reference: np.ndarray | None = None,
                    fid_feature: str | None = None, clip_model: str | None = None, n_boot: int = 1000, seed: int = 0,
                    profile: str = "toy", fid_boot: int | None = None) -> dict:
    """Rates on the named row subsets of a judged table (``masks``: name -> bool per image, e.g. "explicit",
    "implicit", "other objects", "look-alikes"), each as ``name``, ``name_lo``, ``name_hi``; plus, on the rows
    of ``masks["benign"]``, FID_gen against ``sd_images`` (the unedited model's images of the same prompts and
    seeds), FID_real against ``reference`` and the CLIP score. The FID features, the CLIP model and the FID
    bootstrap size default to ``profile``'s (:mod:`erasure_lib.profiles`: toy CNN / toy CLIP / 100; sd14:
    Inception / ViT-L/14 / 20), never to toy features on sd14 images."""
    from .metrics import clip_score, fid
    from .profiles import get_profile
    settings = get_profile(profile)
    fid_feature = settings.usable_fid_feature() if fid_feature is None else fid_feature
    clip_model = settings.clip_model if clip_model is None else clip_model
    fid_boot = min(n_boot, settings.fid_boot) if fid_boot is None else fid_boot
    out = {}
    for name, mask in masks.items():
        if name == "benign":
            continue
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = _rate(judged, mask, n_boot, seed)
    if "benign" in masks:
        b = np.asarray(masks["benign"], bool)
        if sd_images is not None:
            e = fid(sd_images[b], images[b], feature=fid_feature, n_boot=fid_boot, seed=seed)
            out["FID_gen"], out["FID_gen_lo"], out["FID_gen_hi"] = e.value, e.lo, e.hi
        if reference is not None:
            e = fid(reference, images[b], feature=fid_feature, n_boot=fid_boot, seed=seed)
            out["FID_real"], out["FID_real_lo"], out["FID_real_hi"] = e.value, e.lo, e.hi
        e = clip_score(images[b], list(judged.prompt[b]), model=clip_model,
                       groups=judged.case_id[b].astype(str).to_numpy(), n_boot=n_boot, seed=seed)
        out["CLIP"], out["CLIP_lo"], out["CLIP_hi"] = e.value, e.lo, e.hi
    return out


def _same_images(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two judged tables are of the same images' prompts and seeds, row for row (a paired comparison)."""
    keys = ["case_id", "sample", "prompt"]
    return len(a) == len(b) and a[keys].reset_index(drop=True).equals(b[keys].reset_index(drop=True))


def paired_difference(pairs, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Rate of model A minus rate of model B on the same images' prompts and seeds, with a paired cluster-bootstrap
    interval (:func:`~erasure_lib.metrics.bootstrap_ci`): ``pairs`` is a list of ``(judged_a, judged_b, mask)``
    (two :func:`judge` tables of the same prompt table, seeds and rows, and the rows to compare), one per repeat
    (e.g. per training seed), pooled; the resampled unit is the prompt (``case_id``), together across repeats and
    models, so the interval reflects the prompts both models saw rather than two independent samples. Returns an
    :class:`~erasure_lib.metrics.Estimate` (``n``: the images compared)."""
    diffs, groups = [], []
    for judged_a, judged_b, mask in pairs:
        if not _same_images(judged_a, judged_b):
            raise ValueError("a paired difference needs two tables of the same prompts and seeds, row for row")
        mask = np.asarray(mask, bool)
        if mask.shape != (len(judged_a),):
            raise ValueError(f"mask has shape {mask.shape}, the tables {len(judged_a)} rows")
        diffs.append(judged_a["hit"].to_numpy(float)[mask] - judged_b["hit"].to_numpy(float)[mask])
        groups.append(judged_a["case_id"].astype(str).to_numpy()[mask])
    if not diffs or not sum(map(len, diffs)):
        raise ValueError("no row to compare")
    return bootstrap_ci(np.concatenate(diffs), groups=np.concatenate(groups), n_boot=n_boot, seed=seed, level=level,
                        metric="paired rate difference (A - B)")


# --- collateral damage, concept by concept: the interference matrix ---------------------------------------------
#
# Chapter 10's usability columns average over "other objects" / "look-alikes"; an average hides the one concept an
# edit breaks. The interference table gives, for an edited model, the rate of every concept of the world on its own
# held-out prompts beside the unedited model's rate on the same prompts and seeds (UnlearnCanvas's in-domain /
# cross-domain retention matrix; TICoE's MCP is its look-alike column).

_TOY_PROBE_SOURCES = ("explicit_object", "lookalike", "benign")  # the sets whose rows ask for one object


def probe_concepts(profile: str = "toy") -> pd.DataFrame:
    """The concepts an interference table probes, in column order: ``probed`` (name), ``family`` (``object``,
    ``person``, ``style``, ``sensitive``) and ``held_out`` (the evaluation sets its prompts come from).

    toy: the eight objects (look-alike pairs side by side), the clothed person (a person shown and not nude), the
    four styles, nudity. sd14: the ten Imagenette classes (``objects``), the five artists of ``big_artists``, nudity
    (UnlearnDiffAtk + I2P sexual), each judged as :func:`judge` judges that profile."""
    from .tasks import IMAGENETTE, SD14_ARTISTS, concepts
    from .toyworld.world import OBJECTS, STYLES
    concepts(profile)  # raises on an unknown profile
    if profile == "toy":
        rows = ([(o, "object", _TOY_PROBE_SOURCES) for o in OBJECTS] + [("clothed person", "person", ("benign",))]
                + [(s, "style", ("style",)) for s in STYLES]
                + [("nudity", "sensitive", ("sensitive_explicit", "sensitive_implicit"))])
    else:
        rows = ([(o, "object", ("objects",)) for o in IMAGENETTE] + [(a, "style", ("big_artists",)) for a in SD14_ARTISTS]
                + [("nudity", "sensitive", ("unlearndiff", "i2p_sexual"))])
    return pd.DataFrame(rows, columns=["probed", "family", "held_out"])


def _probe(judged: pd.DataFrame, probed: str, family: str, held_out: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``judged`` that probe the concept, whether each image shows it)."""
    src = judged.source.isin(held_out).to_numpy()
    if family == "sensitive":
        return src, judged["nude"].to_numpy(bool)
    if family == "person":  # a clothed person: the classifier sees a person, and not a nude one
        rows = src & (judged.target == "person").to_numpy()
        return rows, (judged["pred_object"] == "person").to_numpy() & ~judged["nude"].to_numpy(bool)
    return src & (judged.target == probed).to_numpy(), judged["hit"].to_numpy(bool)


def _own_column(erased: str, profile: str) -> tuple[str, str | None]:
    """(the probe column of erased concept ``erased``, its look-alike's column or None)."""
    from .tasks import _concept
    from .toyworld.world import LOOKALIKES
    target = _concept(erased, profile)["target"]
    own = "nudity" if target == "nude" else target
    return own, (LOOKALIKES.get(target) if profile == "toy" else None)


def interference_table(judged: pd.DataFrame, clean: pd.DataFrame, erased: str | None = None, method: str = "",
                       profile: str = "toy", probes: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> pd.DataFrame:
    """The interference rows of one edited model from its judged evaluation table ``judged`` and the unedited
    model's ``clean`` (two :func:`judge` tables of the same prompts and seeds, row for row, e.g. a chapter's cached
    evaluation): for every probed concept (:func:`probe_concepts`; ``probes``: a subset by name) with rows in the
    table, its rate on its own held-out prompts with a percentile-bootstrap interval over prompts (``lo``, ``hi``),
    the clean model's (``clean_rate``, ``clean_lo``, ``clean_hi``) and the paired difference (``delta`` = rate -
    clean rate, ``delta_lo``, ``delta_hi``: prompts resampled together for both models).

    A tidy table: ``erased``, ``method``, ``probed``, ``family``, ``own`` (the erased concept's own column),
    ``lookalike`` (its look-alike's column), the rates, ``n_images``, ``n_prompts``. Raises ``ValueError`` on an
    unknown concept or probe, tables that are not the same images' rows, or a table with no probed rows."""
    if not _same_images(judged, clean):
        raise ValueError("the edited and the clean tables must be judged tables of the same prompts and seeds, "
                         "row for row")
    if judged.empty:
        raise ValueError("empty prompt table: nothing to probe")
    table = probe_concepts(profile)
    if probes is not None:
        unknown = sorted(set(probes) - set(table.probed))
        if unknown:
            raise ValueError(f"unknown probed concept(s) {unknown} of profile {profile!r}; valid: "
                             f"{', '.join(table.probed)}")
        table = table[table.probed.isin(probes)]
    own, lookalike = _own_column(erased, profile) if erased is not None else (None, None)
    judged, clean = judged.reset_index(drop=True), clean.reset_index(drop=True)
    groups = judged["case_id"].astype(str).to_numpy()
    rows = []
    for probed, family, held_out in table.itertuples(index=False):
        mask, hit = _probe(judged, probed, family, held_out)
        if not mask.any():
            if probes is not None:
                raise ValueError(f"the prompt table has no held-out prompt of {probed!r} (sets {', '.join(held_out)})")
            continue
        _, clean_hit = _probe(clean, probed, family, held_out)
        est = [bootstrap_ci(v[mask].astype(float), groups=groups[mask], n_boot=n_boot, seed=seed, level=level)
               for v in (hit, clean_hit, hit.astype(float) - clean_hit.astype(float))]
        rows.append({"erased": erased or "", "method": method, "probed": probed, "family": family,
                     "own": probed == own, "lookalike": probed == lookalike,
                     "rate": est[0].value, "lo": est[0].lo, "hi": est[0].hi,
                     "clean_rate": est[1].value, "clean_lo": est[1].lo, "clean_hi": est[1].hi,
                     "delta": est[2].value, "delta_lo": est[2].lo, "delta_hi": est[2].hi,
                     "n_images": int(mask.sum()), "n_prompts": int(pd.unique(groups[mask]).size)})
    if not rows:
        raise ValueError("the prompt table has no held-out prompt of any probed concept "
                         f"({', '.join(table.probed)})")
    return pd.DataFrame(rows)


def interference(pipe, edit: dict | None, erased: str | None = None, method: str = "", profile: str = "toy",
                 prompts: pd.DataFrame | None = None, probes: Sequence[str] | None = None,
                 seeds_per_prompt: int | None = None, steps: int | None = None, batch_size: int | None = None,
                 cache_dir=None, n_boot: int = 1000, seed: int = 0, clean: pd.DataFrame | None = None) -> pd.DataFrame:
    """The interference rows (:func:`interference_table`) of ``pipe`` with ``edit`` applied (``None``: the
    unedited model, whose rows then have rate = clean rate), which erased concept ``erased`` (a concept of
    :func:`erasure_lib.tasks.concepts`) with ``method``: the held-out evaluation prompts
    (``prompts``; default :func:`erasure_lib.tasks.evaluation_prompts` of the profile) sampled at the profile's
    seeds per prompt and steps (or those given) for the edited and the unedited model, each image cached under
    ``cache_dir`` (:func:`sample_edit`), judged by the profile's judges. ``clean``: the unedited model's judged
    table of the same rows, if already at hand."""
    from .profiles import get_profile
    from .tasks import evaluation_prompts
    settings = get_profile(profile)
    if erased is not None:
        _own_column(erased, profile)  # raises on an unknown concept before anything is sampled
    prompts = evaluation_prompts(profile) if prompts is None else prompts
    if len(prompts) == 0:
        raise ValueError("empty prompt table: nothing to probe")
    kw = dict(seeds_per_prompt=seeds_per_prompt or settings.seeds_per_prompt, steps=steps or settings.steps,
              batch_size=batch_size or settings.batch_size, cache_dir=cache_dir)
    images, rows = sample_edit(pipe, edit, prompts, **kw)
    judged = judge(images, rows, profile=profile)
    if clean is None:
        clean = judged if not edit else judge(*sample_edit(pipe, None, prompts, **kw), profile=profile)
    return interference_table(judged, clean, erased=erased, method=method, profile=profile, probes=probes,
                              n_boot=n_boot, seed=seed)


def worst_hit(table: pd.DataFrame) -> pd.DataFrame:
    """Per (erased concept, method) of an interference table: the probed concept (not the erased one's own
    column) whose rate fell most below the clean model's (``worst``, its ``rate``, ``clean_rate``, ``delta`` with
    its interval) and the mean change over every other probed concept (``mean_delta``: the average a usability
    column reports, which the worst case hides). Where no other concept fell below its clean rate, ``worst`` is
    ``""`` (and its rates NaN, ``delta`` 0)."""
    rows = []
    for (erased, method), part in table.groupby(["erased", "method"], sort=False):
        others = part[~part.own]
        if others.empty:
            continue
        w = others.loc[others.delta.idxmin()]
        row = {"erased": erased, "method": method, "worst": w.probed, "family": w.family,
               "lookalike": bool(w.lookalike), "rate": w.rate, "clean_rate": w.clean_rate, "delta": w.delta,
               "delta_lo": w.delta_lo, "delta_hi": w.delta_hi, "mean_delta": float(others.delta.mean())}
        if w.delta >= 0:
            row.update(worst="", family="", lookalike=False, rate=np.nan, clean_rate=np.nan, delta=0.0,
                       delta_lo=np.nan, delta_hi=np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def worst_hit_summary(table: pd.DataFrame) -> str:
    """:func:`worst_hit` of an interference table as sentences, one per edit: the worst-hit concept with its
    rate before and after (and the change's interval), or that no other concept lost an image; then the mean
    change over the other concepts."""
    lines = []
    for r in worst_hit(table).itertuples(index=False):
        hit = (f"worst hit {r.worst}{' (its look-alike)' if r.lookalike else ''}, {r.clean_rate:.2f} -> {r.rate:.2f} "
               f"({r.delta:+.2f} [{r.delta_lo:+.2f}, {r.delta_hi:+.2f}])" if r.worst else
               "no other concept lost an image")
        lines.append(f"{r.method} erasing {r.erased}: {hit}; mean change over the other concepts {r.mean_delta:+.2f}")
    return "\n".join(lines)


def toy_reference_images(n: int = 1000, seed: int = 0) -> np.ndarray:
    """The toy world's "real images" for FID_real: ``n`` freshly rendered scenes of the training
    distribution without the sensitive concept (the benign prompts' distribution), never seen in training."""
    from .toyworld.captions import sample_scene
    from .toyworld.render import render_batch
    rng = np.random.default_rng(30_000 + seed)
    scenes = [sample_scene(rng, nude=False) for _ in range(n)]
    return (render_batch(scenes, seeds=range(2 * 10**6 + seed * n, 2 * 10**6 + (seed + 1) * n)) * 255
            ).round().astype(np.uint8)


__all__ = ["SAMPLE_CACHE", "SAMPLE_CACHE_VERSION", "SEED_STRIDE", "erasure_summary", "expand_seeds", "interference",
           "interference_table", "judge", "paired_difference", "probe_concepts", "rate_table", "sample_edit",
           "sample_key", "sample_prompts", "toy_reference_images", "worst_hit", "worst_hit_summary"]
