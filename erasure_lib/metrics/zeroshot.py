"""CLIP zero-shot judges and CLIP image features: the sd14 profile's object and style judges, and FID_CLIP.

The erasure papers judge objects with a torchvision ResNet-50 (ESD's Imagenette protocol, ``imageclassify.py``)
and styles with CLIP or fine-tuned ViTs (``specs/evaluation.md`` section 5). The default install cannot carry
torchvision (it pulls a CUDA torch), so the sd14 profile judges both with CLIP zero-shot classification
(Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021): an image
gets the label whose prompt (``"a photo of a {label}"`` for objects, ``"a painting in the style of {label}"``
for styles) has the highest cosine similarity with it, among the labels of its family plus a neutral
``"a photo"`` / ``"a painting"`` option. This is a stated substitute: its rates are not comparable with the
papers' ResNet-50 accuracies.

:class:`CLIPImageFeatures` is the FID feature extractor ``feature="clip:<model>"`` of :func:`.fid.fid`: the
L2-normalised CLIP image embeddings (FID_CLIP, Kynkäänniemi et al., "The Role of ImageNet Classes in Fréchet
Inception Distance", ICLR 2023), usable wherever Inception (the ``[gpu]`` extra) is not installed; it is not
comparable with Inception-FID either.

``model`` is what :func:`.clip_score.clip_score` takes: ``"toy"``, ``"sd14"`` (``openai/clip-vit-large-patch14``),
a hub id or a local CLIP folder.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ._common import ImageBatch, resolve_device, to_uint8_nhwc

__all__ = ["CLIPImageFeatures", "ZERO_SHOT_TEMPLATES", "zero_shot"]

ZERO_SHOT_TEMPLATES = {"object": "a photo of a {}", "style": "a painting in the style of {}"}
NEUTRAL = {"object": "a photo", "style": "a painting"}


def _model(model: str):
    from .clip_score import _load
    return _load(str(model))


class CLIPImageFeatures(nn.Module):
    """uint8 ``(N, 3, H, W)`` images -> L2-normalised CLIP image embeddings ``(N, projection_dim)``."""

    def __init__(self, model: str = "sd14"):
        super().__init__()
        self.clip, self.processor, self.provenance = _model(model)
        self.num_features = int(self.clip.config.projection_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.processor(images=list(images.permute(0, 2, 3, 1).cpu().numpy()), return_tensors="pt")
        device = next(self.clip.parameters()).device
        feats = self.clip.get_image_features(pixel_values=pixels.pixel_values.to(device))
        return torch.nn.functional.normalize(feats.float(), dim=-1)


@torch.no_grad()
def zero_shot(images: ImageBatch, labels: Sequence[str], family: str = "object", model: str = "sd14",
              batch_size: int = 32, device=None) -> pd.DataFrame:
    """Zero-shot CLIP label of every image among ``labels`` (plus the family's neutral option, label ``""``).

    Returns one row per image: ``label`` (the argmax; ``""`` when the neutral prompt wins) and ``prob`` (the
    softmax probability of that label at CLIP's logit scale), plus ``judge`` (the CLIP model's name)."""
    if family not in ZERO_SHOT_TEMPLATES:
        raise ValueError(f"unknown zero-shot family {family!r}; valid: {', '.join(ZERO_SHOT_TEMPLATES)}")
    labels = [str(x) for x in labels]
    if not labels:
        raise ValueError("zero_shot needs at least one label")
    x = to_uint8_nhwc(images)
    clip, processor, prov = _model(model)
    device = resolve_device(device)
    clip = clip.to(device)
    texts = [ZERO_SHOT_TEMPLATES[family].format(label) for label in labels] + [NEUTRAL[family]]
    tok = processor(text=texts, return_tensors="pt", padding=True)
    text = torch.nn.functional.normalize(clip.get_text_features(
        input_ids=tok.input_ids.to(device), attention_mask=tok.attention_mask.to(device)).float(), dim=-1)
    scale = float(clip.logit_scale.exp())
    names = labels + [""]
    out_label, out_prob = [], []
    for i in range(0, len(x), batch_size):
        pixels = processor(images=list(x[i:i + batch_size]), return_tensors="pt").pixel_values.to(device)
        img = torch.nn.functional.normalize(clip.get_image_features(pixel_values=pixels).float(), dim=-1)
        probs = (scale * img @ text.T).softmax(-1).cpu().numpy()
        best = probs.argmax(1)
        out_label += [names[j] for j in best]
        out_prob += probs[np.arange(len(best)), best].tolist()
    if device.type != "cpu":
        clip.to("cpu")  # the CLIP model is cached: it must not hold GPU memory between calls (training needs it)
    return pd.DataFrame({"label": out_label, "prob": out_prob, "judge": prov["clip_model"]})
