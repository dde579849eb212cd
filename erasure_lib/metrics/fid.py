"""Fréchet distance between feature distributions (FID), via torchmetrics, with a bootstrap interval.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
NeurIPS 2017) fits a Gaussian to the features of each image set and takes the Fréchet distance between
them. The erasure papers use it as the utility metric on benign prompts, with different references and
implementations (``specs/evaluation.md`` section 4.1): T2IBenchmark for UnlearnDiffAtk / AdvUnlearn /
Co-Erasing, ``clean-fid`` for MACE, ``pytorch-fid`` for TRCE's FID_gen, torchmetrics for SalUn.

Here the computation is torchmetrics' ``FrechetInceptionDistance(feature=<module>)`` with a named feature
extractor (``specs/stack.md`` section 4.1):

* ``feature="toy"``: the toy zoo's :class:`~erasure_lib.toyworld.models.ToyFIDFeatures` (96-d pooled CNN
  features, ``data/fid_features``). Offline. **Not Inception-FID**: values are comparable only with other
  toy-feature FIDs.
* ``feature="sd14"``: torch-fidelity's Inception-v3 pool3 (2048-d), the features of the published FIDs. It
  needs the optional ``[gpu]`` extra (``pip install 'erasure-lib[gpu]'``, i.e. ``torch-fidelity``, which pulls
  torchvision and a CUDA torch) and downloads its weights once; it is imported only when asked for.
* ``feature="clip:<model>"`` (e.g. ``"clip:sd14"``, or a local CLIP folder): L2-normalised CLIP image embeddings
  (FID_CLIP, :class:`~erasure_lib.metrics.zeroshot.CLIPImageFeatures`), for machines without the ``[gpu]`` extra
  and for the offline SD-v1.4-shaped test model; not comparable with Inception-FID;
* any ``torch.nn.Module`` returning ``(N, d)`` features from uint8 ``(N, 3, H, W)`` images.

Every result names the extractor, its dimension and the SHA-256 of its weights file, and the sizes of
both sets (report the reference set yourself: real images, or the base model's outputs for FID_gen).

**Interval.** Both sets are resampled independently (``n_boot`` times, default 100 to keep it cheap:
features are extracted once, each resample costs one d x d matrix square root, about 10 ms at d = 96 and
about 7.5 s on a CPU at d = 2048, so the resamples run on the device of the features' extraction (a GPU
where there is one); with features at least :data:`LOW_RANK_MIN_DIMS` wide and fewer images than dimensions,
as on sd14 at Colab sizes, a resample is an ``n1 x n2`` SVD instead (:func:`frechet_distance_low_rank`, the same
value up to round-off); ``n_boot=0`` skips it). FID is biased upwards at small N, and a resample
repeats images, which inflates it further: the raw percentile interval of two samples of one distribution
lies entirely above the point value (300 vs 300 toy images: FID 5.3, raw interval [7.0, 13.1]). By default
(``bias_correct=True``) the interval is therefore shifted by the bootstrap bias estimate (mean of the
resampled FIDs minus the point value, recorded as ``bootstrap_bias``) and floored at 0; pass
``bias_correct=False`` for the raw percentile interval. Either way it is the sampling spread of the FID at
this N, not a correction of FID's own small-sample bias: compare FIDs only at equal N.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import ImageBatch, resolve_device, sha256_file, to_uint8_nhwc
from .bootstrap import Estimate, bootstrap_ci

__all__ = ["FID_PRESETS", "FeatureSpec", "LOW_RANK_MIN_DIMS", "fid", "frechet_distance_low_rank",
           "load_feature_extractor"]

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dims: int
    description: str


FID_PRESETS: dict[str, FeatureSpec] = {
    "toy": FeatureSpec("toy ToyFIDFeatures", 96,
                       "the toy concept CNN's pooled features (data/fid_features); not Inception-FID"),
    "sd14": FeatureSpec("torch-fidelity InceptionV3 pool3", 2048,
                        "Inception-v3 (TF 2015-12-05 weights) via torch-fidelity, as torchmetrics' feature=2048"),
    "clip:<model>": FeatureSpec("CLIP image embeddings (FID_CLIP)", 0,
                                "L2-normalised CLIP image embeddings of a named CLIP model; not Inception-FID"),
}


class _Recording(nn.Module):
    """Wraps a feature extractor and keeps a CPU copy of every feature batch it returns."""

    def __init__(self, extractor: nn.Module, num_features: int):
        super().__init__()
        self.extractor = extractor
        self.num_features = num_features
        self.records: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.extractor(images)
        self.records.append(features.detach().double().cpu())
        return features

    def take(self) -> torch.Tensor:
        out, self.records = torch.cat(self.records), []
        return out


class _Precomputed(nn.Module):
    """Identity 'extractor' for torchmetrics' FID on features computed beforehand (the bootstrap)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@lru_cache(maxsize=1)
def _toy_features() -> nn.Module:
    from ..toyworld import zoo
    return zoo.load_fid_features()


@lru_cache(maxsize=2)
def _clip_features(model: str) -> nn.Module:
    from .zeroshot import CLIPImageFeatures
    return CLIPImageFeatures(model)


def _inception() -> tuple[nn.Module, dict[str, Any]]:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "FID with feature='sd14' (Inception-v3, the published FIDs' features) needs torch-fidelity, an "
            "optional extra that is not installed: pip install 'erasure-lib[gpu]' (or pip install "
            "torch-fidelity==0.3.0). It pulls torchvision and a CUDA torch, so it is meant for a GPU machine "
            "(e.g. Colab). Offline, use feature='toy' (not comparable with Inception-FID).") from err
    from torchmetrics.image.fid import NoTrainInceptionV3

    module = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    hits = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob("*inception-2015-12-05*.pth"))
    path = hits[0] if hits else None
    return module, {"feature_weights_path": str(path) if path else "",
                    "feature_weights_sha256": sha256_file(path) if path else ""}


def load_feature_extractor(feature: str | nn.Module = "toy") -> tuple[nn.Module, int, dict[str, Any]]:
    """``(module, dims, provenance)`` of a named feature extractor (``"toy"``, ``"sd14"``) or a module."""
    if isinstance(feature, nn.Module):
        dims = getattr(feature, "num_features", None)
        if not isinstance(dims, int):
            raise ValueError("a custom FID feature module needs an integer `num_features` attribute")
        folder = getattr(getattr(feature, "config", None), "_name_or_path", "") or ""
        weights = next(iter(sorted(Path(folder).glob("*.safetensors"))), None) if folder else None
        return feature, dims, {"feature_extractor": f"{type(feature).__name__} (user-supplied)",
                               "feature_weights_path": str(weights or ""),
                               "feature_weights_sha256": sha256_file(weights) if weights else ""}
    if isinstance(feature, str) and feature.startswith("clip:"):
        module = _clip_features(feature[len("clip:"):])
        return module, module.num_features, {"feature_extractor": f"CLIP image embeddings ({module.provenance['clip_model']})",
                                             "feature_weights_path": module.provenance["clip_weights_path"],
                                             "feature_weights_sha256": module.provenance["clip_weights_sha256"]}
    if feature not in FID_PRESETS or feature == "clip:<model>":
        raise ValueError(f"unknown FID feature {feature!r}; valid: toy, sd14, clip:<model> or an nn.Module")
    spec = FID_PRESETS[feature]
    if feature == "toy":
        from ..toyworld import zoo
        module = _toy_features()
        path = zoo.data_dir() / "fid_features" / "diffusion_pytorch_model.safetensors"
        prov = {"feature_weights_path": str(path), "feature_weights_sha256": sha256_file(path)}
    else:
        module, prov = _inception()
    return module, spec.dims, {"feature_extractor": spec.name, **prov}


def _features(metric, recorder: _Recording, images: np.ndarray, *, real: bool, batch_size: int,
              device: torch.device) -> torch.Tensor:
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).contiguous()
        metric.update(batch.to(device), real=real)
    return recorder.take()


# Resamples of features at least this wide, from fewer images than dimensions, use the low-rank form below.
LOW_RANK_MIN_DIMS = 512


def frechet_distance_low_rank(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Fréchet distance of two feature sets ``(n1, d)`` and ``(n2, d)`` from their centred matrices, in float64.

    With ``A``, ``B`` the centred features and ``S1 = A^T A / (n1 - 1)``, ``S2 = B^T B / (n2 - 1)`` (torchmetrics'
    unbiased covariances), the nonzero eigenvalues of ``S1 S2`` are the squared singular values of ``A B^T`` over
    ``(n1 - 1)(n2 - 1)``, so ``tr sqrt(S1 S2) = ||A B^T||_* / sqrt((n1 - 1)(n2 - 1))``: an ``n1 x n2`` SVD instead of
    a ``d x d`` matrix square root. The same number as the full form up to round-off; far cheaper when n < d
    (150 images of 2048-d Inception features: milliseconds instead of seconds per resample)."""
    a, b = real.double(), fake.double()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 feature rows per set")
    mu = a.mean(0) - b.mean(0)
    A, B = a - a.mean(0), b - b.mean(0)
    c1, c2 = len(a) - 1, len(b) - 1
    nuclear = torch.linalg.svdvals(A @ B.T).sum()
    return float(mu @ mu + (A * A).sum() / c1 + (B * B).sum() / c2 - 2 * nuclear / (c1 * c2) ** 0.5)


@torch.no_grad()
def fid(
    real_images: ImageBatch,
    fake_images: ImageBatch,
    feature: str | nn.Module = "toy",
    *,
    batch_size: int = 128,
    n_boot: int = 100,
    seed: int = 0,
    level: float = 0.95,
    bias_correct: bool = True,
    device: str | torch.device | None = None,
) -> Estimate:
    """FID between ``real_images`` (the reference) and ``fake_images`` (the generations).

    Images: uint8 RGB ``(N, H, W, 3)`` (or anything :func:`._common.to_uint8_nhwc` accepts), at least 2
    per set. ``feature``: ``"toy"`` (default, offline), ``"sd14"`` (Inception, needs the ``[gpu]`` extra)
    ``"clip:<model>"`` (FID_CLIP) or a module. Features are extracted once, in batches of ``batch_size``; the point value is torchmetrics'
    FID on them, the interval a two-sample percentile bootstrap (see the module docstring)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = to_uint8_nhwc(real_images), to_uint8_nhwc(fake_images)
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(real)} real and {len(fake)} fake")
    # the toy extractor is tiny: CPU unless told otherwise; others: CUDA when available
    device = torch.device(device) if device is not None else (
        torch.device("cpu") if isinstance(feature, str) and feature == "toy" else resolve_device(None))
    extractor, dims, prov = load_feature_extractor(feature)
    recorder = _Recording(extractor, dims)
    metric = FrechetInceptionDistance(feature=recorder, normalize=False).to(device)
    real_feats = _features(metric, recorder, real, real=True, batch_size=batch_size, device=device)
    fake_feats = _features(metric, recorder, fake, real=False, batch_size=batch_size, device=device)
    value = max(float(metric.compute()), 0.0)  # FID >= 0; round-off gives -1e-11 for identical sets
    if device.type != "cpu":
        metric.to("cpu")  # the extractors are cached: they must not hold GPU memory between calls

    # the resamples' matrix square roots run where the features were extracted (a GPU when there is one)
    resampled = FrechetInceptionDistance(feature=_Precomputed(dims), normalize=False).to(device)
    real_feats, fake_feats = real_feats.to(device), fake_feats.to(device)

    low_rank = dims >= LOW_RANK_MIN_DIMS and max(len(real), len(fake)) < dims

    def statistic(idx_real: np.ndarray, idx_fake: np.ndarray) -> float:
        i_real, i_fake = torch.from_numpy(idx_real).to(device), torch.from_numpy(idx_fake).to(device)
        if low_rank:
            return frechet_distance_low_rank(real_feats[i_real], fake_feats[i_fake])
        resampled.reset()
        resampled.update(real_feats[i_real], real=True)
        resampled.update(fake_feats[i_fake], real=False)
        return float(resampled.compute())

    details = {**prov, "feature_dims": dims, "n_real": len(real), "n_fake": len(fake),
               "implementation": "torchmetrics FrechetInceptionDistance(feature=<module>)",
               "bootstrap_statistic": "low-rank (nuclear norm)" if low_rank else "torchmetrics"}
    est = bootstrap_ci(statistic, sizes=(len(real), len(fake)), n_boot=n_boot, seed=seed, level=level,
                       metric="fid", preset=feature if isinstance(feature, str) else "custom", details=details,
                       bias_correct=bias_correct)
    lo = max(est.lo, 0.0) if bias_correct and not np.isnan(est.lo) else est.lo
    return dataclasses.replace(est, value=value, lo=lo)  # value: torchmetrics' FID on the streamed batches
