"""The toy model zoo's architectures: SD v1.4's parts at toy size, plus the concept classifiers.

Every part is a real diffusers / transformers class (``CLIPModel``, ``AutoencoderKL``,
``UNet2DConditionModel``, ``DDIMScheduler``) with SD's module names, so a method that edits ``attn2.to_k``
on SD v1.4 edits the same thing here. Text reaches the UNet only through cross-attention: no class
embedding, no added text embedding (TOYWORLD.md, "one constraint that keeps the toy honest").

The concept classifiers (object / style / sensitive / colour heads on one small CNN) play the part of the
ResNet-50, style-ViT and NudeNet evaluators of the papers; :class:`ToyFIDFeatures` is the same CNN's pooled
features, the analog of Inception's pool3 for FID (named in every FID report: it is not Inception-FID).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from transformers import CLIPConfig, CLIPModel

from .world import COLOUR_LABELS, OBJECT_LABELS, STYLE_LABELS

HIDDEN = 64  # the vision tower's width (and the committed zoo's text width)
TEXT_WIDTH = 64  # text hidden size == UNet cross_attention_dim, as 768 is on SD v1.4 (train.py --text-width)
MAX_LENGTH = 77
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's normalisation, as SD's image encoders use
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# SD v1.4's noise schedule, with clip_sample=False (TOYWORLD.md: clipping x0 ruins unit-variance latents)
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, prediction_type="epsilon")


def build_clip(vocab_size: int, bos: int, eos: int, pad: int, text_width: int = TEXT_WIDTH) -> CLIPModel:
    """Toy CLIP: a 3-layer text tower of ``text_width`` (its states are the UNet's cross-attention context) and a
    4-layer vision tower of :data:`HIDDEN`, both projected to ``text_width``."""
    text = dict(vocab_size=vocab_size, hidden_size=text_width, intermediate_size=4 * text_width,
                num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_LENGTH, bos_token_id=bos,
                eos_token_id=eos, pad_token_id=pad, projection_dim=text_width)
    vision = dict(image_size=32, patch_size=4, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                  num_hidden_layers=4, num_attention_heads=4, projection_dim=text_width)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=text_width))


def build_vae() -> AutoencoderKL:
    # 3 blocks, f=4: 32x32x3 -> 8x8x4 latents (TOYWORLD.md, "what was measured")
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16)


def build_unet(cross_attention_dim: int = TEXT_WIDTH) -> UNet2DConditionModel:
    # cross-attention (attn2) at both resolutions (8x8, 4x4) and in the mid block, like SD's attention levels;
    # one resnet per level keeps a training step at about 0.6 s on one core (4.2M parameters)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=16)


def build_train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE)


def build_sample_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULE, set_alpha_to_one=False, steps_offset=1)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images, NCHW or NHWC, -> float NCHW in [0, 1]."""
    x = images
    if x.ndim != 4:
        raise ValueError(f"expected a batch of images (4-D), got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {tuple(images.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if torch.isnan(x).any():
        raise ValueError("images contain NaN")
    if x.shape[-2:] != (32, 32):
        x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    return x


class _Trunk(nn.Module):
    def __init__(self, channels):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU(), nn.MaxPool2d(2)]
            c_in = c
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net((x - 0.5) / 0.25).mean(dim=(2, 3))


class ToyConceptClassifier(ModelMixin, ConfigMixin):
    """One CNN, four heads: object (8 objects + person), style (none + 4), sensitive (no/yes), colour.

    ``forward`` takes images as :func:`to_pixels` accepts them and returns a dict of logits per head;
    :meth:`predict` returns label names and probabilities."""

    @register_to_config
    def __init__(self, channels=(24, 48, 96), object_labels=OBJECT_LABELS, style_labels=STYLE_LABELS,
                 colour_labels=COLOUR_LABELS):
        super().__init__()
        self.trunk = _Trunk(channels)
        d = channels[-1]
        self.heads = nn.ModuleDict({
            "object": nn.Linear(d, len(object_labels)),
            "style": nn.Linear(d, len(style_labels)),
            "sensitive": nn.Linear(d, 2),
            "colour": nn.Linear(d, len(colour_labels)),
        })

    def labels(self, head: str) -> tuple[str, ...]:
        return {"object": tuple(self.config.object_labels), "style": tuple(self.config.style_labels),
                "sensitive": ("safe", "nude"), "colour": tuple(self.config.colour_labels)}[head]

    def features(self, images) -> torch.Tensor:
        return self.trunk(to_pixels(images).to(self.device))

    def forward(self, images) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images, batch_size: int = 256) -> dict[str, dict]:
        """Per head: ``label`` (names), ``index`` and ``prob`` (softmax) over the batch."""
        outs = [self(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        result = {}
        for head in self.heads:
            prob = torch.cat([o[head] for o in outs]).softmax(-1).cpu()
            idx = prob.argmax(-1)
            result[head] = {"index": idx, "prob": prob, "label": [self.labels(head)[i] for i in idx.tolist()]}
        return result


class ToyFIDFeatures(ModelMixin, ConfigMixin):
    """The classifier's pooled features as an FID feature extractor (torchmetrics' ``feature=``).

    Accepts uint8 images (torchmetrics' ``normalize=False``) or floats in [0, 1] (``normalize=True``)."""

    @register_to_config
    def __init__(self, channels=(24, 48, 96)):
        super().__init__()
        self.trunk = _Trunk(channels)
        self.num_features = channels[-1]

    def forward(self, images) -> torch.Tensor:
        return self.trunk(to_pixels(images).to(self.device))
