"""CLIP score (image-caption agreement) via torchmetrics' ``CLIPScore``, with per-image scores and an interval.

CLIPScore (Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning", EMNLP 2021)
is the cosine similarity of CLIP's image and text embeddings. The erasure papers use it to show that benign
prompts are still followed, with different backbones and scales (``specs/evaluation.md`` section 4.2):
UnlearnDiffAtk / AdvUnlearn / Co-Erasing / TICoE use ViT-L/14 and print ~0.30 (cosine), TRCE prints ~31
(x100), MACE uses ViT-B/32 cosines.

**Scale.** torchmetrics' ``CLIPScore`` gives ``100 * cos`` per pair and reports ``max(mean, 0)``; that is
this module's ``value`` too (so it equals ``CLIPScore().compute()`` on the same pairs). Divide by 100 to
compare with papers that print cosines (~0.30). Per-image scores in the table are ``100 * cos``, unclipped.

**Models** (``specs/stack.md`` section 4.2):

* ``model="toy"``: the zoo's toy CLIP (``data/toy_clip``), loaded offline;
* ``model="sd14"``: ``openai/clip-vit-large-patch14`` (downloaded from the Hugging Face hub on first use),
  the ViT-L/14 of UnlearnDiffAtk's attack code and TICoE;
* or a local CLIP folder path, or a callable returning ``(model, processor)``.

torchmetrics accepts a callable ``model_name_or_path`` returning ``(model, processor)``, which is how the
toy CLIP gets in (a local path string is rejected). Under transformers 5, ``CLIPModel.get_image_features``
/ ``get_text_features`` return a ``BaseModelOutputWithPooling`` instead of a tensor and torchmetrics 1.9.0
fails (``Lightning-AI/torchmetrics#3407``, closed upstream but unreleased); :class:`CLIPFeatureAdapter`
returns the ``pooler_output`` tensor instead.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import CLIPModel, CLIPProcessor

from ._common import ImageBatch, check_groups, resolve_device, sha256_file, to_uint8_nhwc
from .bootstrap import Estimate, bootstrap_ci

__all__ = ["CLIP_PRESETS", "CLIPFeatureAdapter", "clip_loader", "clip_score", "clip_scores"]

CLIP_PRESETS: dict[str, str] = {
    "toy": "toy CLIP (data/toy_clip, offline)",
    "sd14": "openai/clip-vit-large-patch14",
}


class CLIPFeatureAdapter(CLIPModel):
    """A ``CLIPModel`` whose feature methods return tensors, as torchmetrics expects (torchmetrics#3407)."""

    @staticmethod
    def _tensor(out: Any) -> torch.Tensor:
        return out if torch.is_tensor(out) else out.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(super().get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(super().get_text_features(*args, **kwargs))


def _weights_file(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


@lru_cache(maxsize=4)
def _load(source: str) -> tuple[CLIPFeatureAdapter, CLIPProcessor, dict[str, Any]]:
    if source == "toy":
        from ..toyworld import zoo
        folder = zoo.verify("toy_clip")
        model = CLIPFeatureAdapter.from_pretrained(folder, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
        weights = _weights_file(folder)
        name = CLIP_PRESETS["toy"]
    elif source == "sd14" or ("/" in source and not Path(source).exists()):  # a hub id
        repo = CLIP_PRESETS["sd14"] if source == "sd14" else source
        try:
            model = CLIPFeatureAdapter.from_pretrained(repo).eval()
            processor = CLIPProcessor.from_pretrained(repo)
        except OSError as err:
            raise RuntimeError(f"CLIP score with {repo!r} needs the model from the Hugging Face hub (about 1.7 GB, "
                               "downloaded once and cached) and it could not be fetched; use model='toy' "
                               "offline.") from err
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(repo, "model.safetensors")
        weights = Path(cached) if isinstance(cached, str) else None
        name = repo
    else:
        folder = Path(source)
        model = CLIPFeatureAdapter.from_pretrained(folder, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
        weights = _weights_file(folder)
        name = str(folder)
    prov = {"clip_model": name, "clip_weights_path": str(weights or ""),
            "clip_weights_sha256": sha256_file(weights) if weights else ""}
    return model, processor, prov


def clip_loader(model: str = "toy") -> Callable[[], tuple[CLIPFeatureAdapter, CLIPProcessor]]:
    """The callable torchmetrics' ``CLIPScore(model_name_or_path=...)`` takes, for ``"toy"``, ``"sd14"``,
    a hub id or a local folder."""
    def load() -> tuple[CLIPFeatureAdapter, CLIPProcessor]:
        m, p, _ = _load(str(model))
        return m, p
    return load


def _metric(model: str | Callable[[], tuple[Any, Any]]):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal import CLIPScore

    class _PerSampleCLIPScore(CLIPScore):
        """torchmetrics' CLIPScore that also keeps every pair's ``100 * cos`` (for tables and the bootstrap)."""

        def update(self, source, target) -> None:  # same state updates as CLIPScore.update
            score, n = _clip_score_update(source, target, self.model, self.processor)
            self.score += score.sum(0)
            self.n_samples += n
            self.per_sample.append(score.detach().float().cpu())

    metric = _PerSampleCLIPScore(model_name_or_path=model if callable(model) else clip_loader(model))
    metric.per_sample = []
    return metric


@torch.no_grad()
def clip_scores(
    images: ImageBatch,
    captions: Sequence[str],
    model: str | Callable[[], tuple[Any, Any]] = "toy",
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> tuple[pd.DataFrame, float, dict[str, Any]]:
    """Per-image ``100 * cos`` scores: ``(table with image, caption, score; torchmetrics' value; provenance)``."""
    x = to_uint8_nhwc(images)
    captions = [str(c) for c in captions]
    if len(x) != len(captions):
        raise ValueError(f"need one caption per image: {len(x)} images, {len(captions)} captions")
    if len(x) == 0:
        raise ValueError("no images to score")
    metric = _metric(model)
    dev = torch.device(device) if device is not None else (
        torch.device("cpu") if model == "toy" else resolve_device(None))
    metric = metric.to(dev)
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(x[start:start + batch_size]).permute(0, 3, 1, 2).to(dev)
        metric.update(list(batch), captions[start:start + batch_size])
    value = float(metric.compute())
    scores = torch.cat(metric.per_sample).numpy().astype(float)
    if dev.type != "cpu":
        metric.to("cpu")  # the CLIP model is cached: it must not hold GPU memory between calls (training needs it)
    prov = _load(str(model))[2] if not callable(model) else {"clip_model": getattr(model, "__name__", "callable"),
                                                            "clip_weights_path": "", "clip_weights_sha256": ""}
    table = pd.DataFrame({"image": np.arange(len(x)), "caption": captions, "score": scores})
    return table, value, prov


def clip_score(
    images: ImageBatch,
    captions: Sequence[str],
    model: str | Callable[[], tuple[Any, Any]] = "toy",
    *,
    batch_size: int = 64,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    device: str | torch.device | None = None,
    return_table: bool = False,
) -> Estimate | tuple[Estimate, pd.DataFrame]:
    """Mean CLIP score of (image, caption) pairs on torchmetrics' scale (``max(mean 100 * cos, 0)``).

    ``images``: uint8 RGB ``(N, H, W, 3)``; ``captions``: one per image (usually the prompt). The interval
    is a percentile bootstrap over images (over prompts with ``groups=``), floored at 0 like the value.
    ``return_table=True`` also returns the per-image scores."""
    table, value, prov = clip_scores(images, captions, model, batch_size=batch_size, device=device)
    check_groups(groups, len(table))
    details = {**prov, "scale": "100 * cosine, mean clipped at 0 (torchmetrics CLIPScore)"}
    est = bootstrap_ci(table["score"].to_numpy(), groups=groups, n_boot=n_boot, seed=seed, level=level,
                       metric="clip_score", preset=model if isinstance(model, str) else "custom", details=details)
    # value: torchmetrics' own compute(); the interval is floored at 0 like it
    est = dataclasses.replace(est, value=value, lo=max(est.lo, 0.0), hi=max(est.hi, 0.0))
    return (est, table) if return_table else est
