"""NS-Net and its baselines: detectors of AI-generated images with a common ``fit`` / ``predict_proba`` / ``save``.

Paper: Jiazhen Yan, Fan Wang, Weiwei Jiang, Ziqiang Li, Zhangjie Fu, "Decoupling CLIP Semantic Information through
NULL-Space for Generalizable AI-Generated Image Detection" (NS-Net), arXiv 2508.01248. No official code exists
(``specs/ns-net.md`` section 4); the pieces follow the spec: the architecture of the paper's figure (3.1, 3.2), the
loss (3.3), the patch selection of the group's DGS-Net code (``HorizonTEL/DGS-Net`` @ 1aed871, 3.4), each marked
[inf] where the paper is silent. Written here from the spec; nothing is copied.

:class:`NSNet` (``config.projection`` in :data:`~erasure_lib.detect.null_space.MODES`):

1. every image is captioned (:class:`Backbone`'s ``captioner``: the toy's classifier captions, BLIP on sd14) and the
   caption encoded by the frozen CLIP text tower (its projected ``text_embeds``);
2. the image goes through patch selection (:mod:`~erasure_lib.detect.patches`) and the CLIP vision tower with LoRA
   on its attention's q / k / v (``peft``; frozen otherwise) to the projected ``image_embeds`` ``u``;
3. ``u`` is projected onto the null space of the captions' features (:func:`~erasure_lib.detect.null_space.project`:
   the batch's captions in ``"batch"`` mode, the image's own in ``"per_image"``, the training set's in
   ``"global_svd"``), giving ``f``;
4. loss ``(1 - lam) SupCon(f) + lam BCE(fc(f))``; ``predict_proba`` is ``sigmoid(fc(f))``.

``projection=None`` is the ablation that isolates the projection: the same CLIP + LoRA + patch selection + loss
with ``f = u``. The baselines: :class:`UnivFD` (Ojha et al., CVPR 2023, ``WisconsinAIVision/UniversalFakeDetect``:
a linear probe on the frozen CLIP image features) and :class:`SmallCNN` (the analog of Wang et al.'s CNNSpot, CVPR
2020: a CNN trained from scratch on the pixels).

*Toy* values (marked in :class:`NSNetConfig`): the toy CLIP's features have 64 dimensions, not ViT-L/14's 768, so the
batch projector works on batches of 16 (it removes at most 16 of 64 directions; SD's batch of 32 removes 32 of
768). The toy CLIP learnt the toy world's semantics only, never a generator's pixel statistics (a web-scale CLIP has
seen both), and the settings of the spec left every CLIP detector near chance even on its training images
(measured on 2,048 training images: LoRA on q / k / v only, 0.55; lambda 0.2 and temperature 0.07, 0.56): on the toy
LoRA (rank 16, no dropout) also adapts the patch embedding, the attention output and the MLPs, and the loss weighs
BCE and SupCon equally (lambda 0.5) at temperature 0.5 (training accuracy 0.69 with everything else equal). The
chapter's lambda ablation runs the replication's 0.2. :meth:`NSNetConfig.sd14` holds the spec's values (lambda 0.2,
temperature 0.07; the DGS-Net candidates rank 6, alpha 6, dropout 0.8 on q / k / v, Adam 1e-4, batch 32) [3p,
group].

Deviations from the group's code, besides the toy values: the images are normalised with the CLIP backbone's own
statistics (DGS-Net uses ImageNet's, spec 3.4); an image's mosaic order is fixed (seeded by its bytes) rather than
reshuffled at every epoch, so that a score never depends on when it is computed; UnivFD's input is resized to the
tower's size rather than centre-cropped.

Test-time batches: in ``"batch"`` mode an image's score depends on the other images of its projection batch (the
paper's form); ``predict_proba`` cuts the input into consecutive batches of ``batch_size`` in the given order (a
last batch of one joins the previous one), so the same input in the same order gives the same scores.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .null_space import MODES, global_svd_projector, ns_net_loss, project
from .patches import PatchConfig, select_patches, toy_config

FORMAT = "erasure-book/aigi-detector"
# *toy*: the toy CLIP learnt the toy world's semantics only, never the pixel statistics of a generator (a web-scale
# CLIP has seen both); LoRA on q / k / v alone left it at chance even on its training images (measured: 0.55), so
# on the toy LoRA also adapts the patch embedding, the attention output and the MLPs.
TOY_LORA_TARGETS = ("patch_embedding", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


# --- inputs -----------------------------------------------------------------------------------------------------

def check_images(images, size: int | None = None) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` images, checked: a clear error for an empty batch, a wrong rank or channel count, a
    dtype other than uint8, or (when ``size`` is given) a side other than ``size``."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"need images as uint8 (N, H, W, 3), got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("the batch of images is empty")
    if images.dtype != np.uint8:
        raise TypeError(f"need uint8 images (0-255), got dtype {images.dtype}")
    if size is not None and images.shape[1:3] != (size, size):
        raise ValueError(f"need {size} x {size} images, got {images.shape[1]} x {images.shape[2]}")
    return images


def square_crop(image, size: int) -> np.ndarray:
    """uint8 ``(size, size, 3)`` of a PIL image: its short side resized to ``size`` (bicubic), centre-cropped."""
    from PIL import Image
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def _labels(labels, n: int) -> torch.Tensor:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"need one label per image ({n}), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (generated)")
    if len(np.unique(y)) < 2:
        raise ValueError("need both real (0) and generated (1) images to fit a detector")
    return torch.as_tensor(y, dtype=torch.float32)


def _image_rng(image: np.ndarray) -> np.random.Generator:
    """The patch shuffle of one image: seeded by its bytes, so a score does not depend on the batch around it."""
    return np.random.default_rng(zlib.crc32(image.tobytes()))


# --- the backbone: CLIP towers, preprocessing, captioner -------------------------------------------------------

@dataclass
class Backbone:
    """What a CLIP detector needs: a ``CLIPModel`` (vision tower, projections, text tower), its tokenizer, the
    vision input size and normalisation, and a captioner (``images -> list[str]``). :meth:`toy` builds the toy
    world's; :meth:`from_folder` any CLIP checkpoint (ViT-L/14 on sd14) with a captioner of your choice."""
    clip: object
    tokenizer: object
    captioner: Callable[[np.ndarray], list[str]]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str = ""
    resize_to: int | None = None     # sd14: images are resized (short side) and centre-cropped to this first
    _lock: object = field(default_factory=threading.Lock, repr=False, compare=False)
    _identity: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def toy(cls, root=None) -> Backbone:
        from ..toyworld import zoo
        from ..toyworld.models import IMAGE_MEAN, IMAGE_STD
        from .captioner import toy_captions
        clip, processor = zoo.load_clip(root)
        return cls(clip, processor.tokenizer, toy_captions, clip.config.vision_config.image_size, IMAGE_MEAN,
                   IMAGE_STD, source="toy_clip")

    @classmethod
    def from_folder(cls, folder, captioner: Callable[[np.ndarray], list[str]], resize_to: int | None = 256,
                    local_files_only: bool = True, device=None) -> Backbone:
        """A ``CLIPModel`` + ``CLIPTokenizer`` folder (or hub id, downloaded only with ``local_files_only=False``),
        on ``device`` (default: CUDA when there is one). The image normalisation is CLIP's, the backbone's own
        (DGS-Net's code normalises with ImageNet's statistics, spec 3.4: a deviation, for a CLIP backbone)."""
        from transformers import CLIPModel, CLIPTokenizer
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        clip = CLIPModel.from_pretrained(folder, local_files_only=local_files_only).eval().to(device)
        tok = CLIPTokenizer.from_pretrained(folder, local_files_only=local_files_only)
        from ..toyworld.models import IMAGE_MEAN, IMAGE_STD
        return cls(clip, tok, captioner, clip.config.vision_config.image_size, IMAGE_MEAN, IMAGE_STD,
                   source=str(folder), resize_to=resize_to)

    @property
    def dim(self) -> int:
        return int(self.clip.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    @property
    def identity(self) -> str:
        """What a fitted detector depends on besides its own weights: the CLIP weights (a hash of the state dict),
        the input size, normalisation and resizing, and the captioner (its qualified name); a cache key part."""
        if self._identity is None:
            from .._hashing import state_dict_sha256
            cap = self.captioner
            name = f"{getattr(cap, '__module__', '')}.{getattr(cap, '__qualname__', type(cap).__qualname__)}"
            text = json.dumps([state_dict_sha256(self.clip), self.image_size, list(self.mean), list(self.std),
                               self.resize_to, name])
            self._identity = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._identity

    def fresh_vision(self) -> nn.Module:
        """An own copy of the vision tower + projection (LoRA is injected into it, never into the shared one)."""
        import copy
        return _Vision(copy.deepcopy(self.clip.vision_model), copy.deepcopy(self.clip.visual_projection))

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 images at the backbone's working size (sd14: short side to ``resize_to``, centre crop)."""
        images = check_images(images)
        if self.resize_to is None or images.shape[1:3] == (self.resize_to, self.resize_to):
            return images
        from PIL import Image
        return np.stack([square_crop(Image.fromarray(im), self.resize_to) for im in images])

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """Normalised ``(N, 3, S, S)`` float tensor of uint8 images already at the vision tower's size ``S``
        (anything else is resized bilinearly; patch selection pads to it)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    @torch.no_grad()
    def text_features(self, captions: Sequence[str], chunk: int = 256) -> torch.Tensor:
        """``(N, d)`` projected CLIP text features of ``captions`` (frozen)."""
        captions = list(captions)
        if not captions or not all(isinstance(c, str) for c in captions):
            raise ValueError("need a non-empty list of caption strings")
        out = []
        for i in range(0, len(captions), chunk):
            with self._lock:      # a fast tokenizer is not safe to share between threads (aigi_eval.fit_many)
                ids = self.tokenizer(captions[i:i + chunk], padding="max_length", truncation=True,
                                     max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
            pooled = self.clip.text_model(input_ids=ids.to(self.clip.device)).pooler_output
            out.append(self.clip.text_projection(pooled).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def image_features(self, images: np.ndarray, chunk: int = 256) -> torch.Tensor:
        """``(N, d)`` frozen projected CLIP image features (UnivFD's input), images resized to the tower's size."""
        images = self.prepare(images)
        vision = _Vision(self.clip.vision_model, self.clip.visual_projection)
        return torch.cat([vision(self.pixels(images[i:i + chunk])).float().cpu()
                          for i in range(0, len(images), chunk)])


class _Vision(nn.Module):
    def __init__(self, vision_model, projection):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = projection

    def forward(self, pixel_values):
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)


# --- NS-Net ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NSNetConfig:
    """NS-Net's settings. Defaults are the *toy*'s (see the module docstring); :meth:`sd14` gives the spec's."""
    projection: str | None = "batch"      # a null_space mode, or None (CLIP + LoRA without projection)
    eps: float = 1e-4                     # ridge of the batch projector [inf]
    svd_tol: float = 1e-3                 # global_svd: relative singular value counted as zero [inf]
    lam: float = 0.5                      # toy; weight of BCE in (1 - lam) SupCon + lam BCE (replication: 0.2) [3p]
    temperature: float = 0.5              # toy; SupCon temperature (replication: 0.07) [3p]
    lora_rank: int = 16                   # toy (DGS-Net: 6) [group]
    lora_alpha: float = 32.0              # toy (DGS-Net: 6)
    lora_dropout: float = 0.0             # toy (DGS-Net: 0.8)
    target_modules: tuple[str, ...] = TOY_LORA_TARGETS   # toy (DGS-Net: q / k / v)
    patch_selection: bool = True
    patch: PatchConfig = field(default_factory=toy_config)
    flip: bool = True                     # random horizontal flip in training (DGS-Net's default)
    epochs: int = 10                      # toy
    batch_size: int = 16                  # toy: 16 of 64 feature dimensions; sd14: 32 of 768
    lr: float = 1e-3                      # toy (DGS-Net: Adam 1e-4)
    seed: int = 0

    def __post_init__(self):
        if self.projection is not None and self.projection not in MODES:
            raise ValueError(f"unknown projection {self.projection!r}; valid: {', '.join(MODES)} or None")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (SupCon and the batch projector need pairs)")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")

    @classmethod
    def sd14(cls, **overrides) -> NSNetConfig:
        """The spec's values for CLIP ViT-L/14 (DGS-Net's candidates, [group]): LoRA r 6, alpha 6, dropout 0.8 on
        q / k / v; 32-px patches of 256-px images into a 224-px mosaic; Adam 1e-4, batch 32; one epoch [inf]."""
        base = dict(lam=0.2, temperature=0.07, lora_rank=6, lora_alpha=6.0, lora_dropout=0.8, target_modules=("q_proj", "k_proj", "v_proj"),
                    patch=PatchConfig(), epochs=1, batch_size=32, lr=1e-4)
        return cls(**{**base, **overrides})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NSNetConfig:
        d = json.loads(text)
        d["patch"] = PatchConfig(**d["patch"])
        d["target_modules"] = tuple(d["target_modules"])
        return cls(**d)


class _Detector:
    """Shared plumbing: ``fit(images, labels, captions=None)``, ``predict_proba(images, captions=None)``,
    ``predict(images) = predict_proba > 0.5``; ``fit_seconds`` after a fit."""
    kind = ""
    fit_seconds: float = float("nan")

    def predict(self, images, captions=None, threshold: float = 0.5) -> np.ndarray:
        return self.predict_proba(images, captions) > threshold

    def _check_fitted(self):
        if not getattr(self, "fitted", False):
            raise RuntimeError(f"this {type(self).__name__} is not fitted: call fit() or load() first")


def _init_linear(layer: nn.Linear, gen: torch.Generator) -> nn.Linear:
    """torch's default initialisation of a linear layer (uniform in +-1/sqrt(fan_in)), drawn from ``gen``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=gen)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=gen)
    return layer


def _lora(vision: nn.Module, config: NSNetConfig, gen: torch.Generator | None = None) -> nn.Module:
    """LoRA injected into ``vision`` (frozen otherwise); the A matrices drawn from ``gen`` (peft's Kaiming-uniform
    default, seeded here so that detectors built in parallel threads do not share torch's global generator), B = 0."""
    from peft import LoraConfig, inject_adapter_in_model
    vision.requires_grad_(False)
    cfg = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                     target_modules=list(config.target_modules))
    vision = inject_adapter_in_model(cfg, vision)
    if gen is not None:
        with torch.no_grad():
            for name, param in vision.named_parameters():
                if "lora_A" in name:
                    nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=gen)
                elif "lora_B" in name:
                    param.zero_()
    return vision


def _lora_state(vision: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in vision.state_dict().items() if "lora_" in k}


class NSNet(_Detector):
    """NS-Net (see the module docstring); ``NSNet(backbone, NSNetConfig(projection=None))`` is CLIP + LoRA."""
    kind = "ns_net"

    def __init__(self, backbone: Backbone, config: NSNetConfig | None = None):
        self.backbone = backbone
        self.config = config or NSNetConfig()
        gen = torch.Generator().manual_seed(self.config.seed)
        self.vision = _lora(backbone.fresh_vision().cpu(), self.config, gen).to(backbone.device)
        self.head = _init_linear(nn.Linear(backbone.dim, 1), gen).to(backbone.device)
        self.global_projector: torch.Tensor | None = None
        self.fitted = False

    @property
    def name(self) -> str:
        return "NS-Net" if self.config.projection else "CLIP+LoRA"

    # inputs
    def _mosaics(self, images: np.ndarray) -> np.ndarray:
        images = self.backbone.prepare(images)
        if not self.config.patch_selection:
            return images
        return np.stack([select_patches(im, self.config.patch, _image_rng(im)) for im in images])

    def _captions(self, images: np.ndarray, captions) -> list[str]:
        if captions is None:
            return list(self.backbone.captioner(images))
        captions = list(captions)
        if len(captions) != len(images):
            raise ValueError(f"need one caption per image ({len(images)}), got {len(captions)}")
        return captions

    def _caption_features(self, images: np.ndarray, captions) -> torch.Tensor:
        """The captions' CLIP text features; without a projection (CLIP + LoRA) no caption is needed: zeros."""
        if self.config.projection is None:
            if captions is not None:
                self._captions(images, captions)        # still checks the count
            return torch.zeros(len(images), self.backbone.dim)
        return self.backbone.text_features(self._captions(images, captions))

    def _features(self, pixels: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        u = self.vision(pixels).float()
        mode = self.config.projection
        if mode is None:
            return u
        if mode == "global_svd":
            if self.global_projector is None:
                raise RuntimeError("global_svd needs the training captions' projector: fit first")
            return u @ self.global_projector.to(u.device)
        return project(u, v.to(u.device), mode, eps=self.config.eps)

    def fit(self, images, labels, captions=None, progress: bool = False) -> NSNet:
        import time
        t0 = time.perf_counter()
        images = check_images(images)
        y = _labels(labels, len(images))
        cfg = self.config
        if cfg.projection == "batch" and len(images) < 2:
            raise ValueError("batch mode needs at least 2 images")
        v_all = self._caption_features(images, captions)
        if cfg.projection == "global_svd":
            self.global_projector = global_svd_projector(v_all, tol=cfg.svd_tol)
            if float(torch.trace(self.global_projector)) < 0.5:
                raise ValueError(f"global_svd: the {len(v_all)} training captions' features span all {v_all.shape[1]} "
                                 "dimensions, so their null space is empty (spec ns-net.md 3.2); use projection="
                                 "'batch' or 'per_image', or raise svd_tol")
        mosaics = self._mosaics(images)
        params = [p for p in self.vision.parameters() if p.requires_grad] + list(self.head.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        n, b = len(images), cfg.batch_size
        steps = cfg.epochs * max(1, n // b)
        bar = tqdm(total=steps, desc=self.name, disable=not progress, mininterval=2)
        dropout = cfg.lora_dropout > 0      # peft's dropout draws from torch's global generator: seeded, forked
        devices = [self.backbone.device] if self.backbone.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=dropout):
            if dropout:
                torch.manual_seed(cfg.seed + 1)
            gen = torch.Generator().manual_seed(cfg.seed)
            self.vision.train()
            for _ in range(cfg.epochs):
                order = torch.randperm(n, generator=gen)
                for s in range(max(1, n // b)):
                    idx = order[s * b:(s + 1) * b]
                    batch = mosaics[idx.numpy()]
                    if cfg.flip:
                        flip = (torch.rand(len(idx), generator=gen) < 0.5).numpy()
                        batch = np.where(flip[:, None, None, None], batch[:, :, ::-1], batch)
                    f = self._features(self.backbone.pixels(batch), v_all[idx])
                    logits = self.head(f).squeeze(1)
                    loss = ns_net_loss(f, logits, y[idx].to(f.device), lam=cfg.lam, temperature=cfg.temperature)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"{self.name}: the loss is {loss.item()}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
        self.vision.eval()
        self.fitted = True
        self.fit_seconds = time.perf_counter() - t0
        return self

    def _chunks(self, n: int) -> list[slice]:
        b = self.config.batch_size
        starts = list(range(0, n, b))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        return [slice(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]

    @torch.no_grad()
    def features(self, images, captions=None) -> torch.Tensor:
        """The decoupled features ``f`` (``(N, d)``) of ``images`` (projected as in :meth:`predict_proba`)."""
        images = check_images(images)
        if self.config.projection == "batch" and len(images) == 1:
            raise ValueError("batch mode projects out the captions of a batch; one image is not a batch: score "
                             "it with others, or use projection='per_image'")
        v = self._caption_features(images, captions)
        mosaics = self._mosaics(images)
        self.vision.eval()
        return torch.cat([self._features(self.backbone.pixels(mosaics[sl]), v[sl]) for sl in self._chunks(len(images))])

    def predict_proba(self, images, captions=None) -> np.ndarray:
        self._check_fitted()
        with torch.no_grad():
            return torch.sigmoid(self.head(self.features(images, captions)).squeeze(1)).float().cpu().numpy()

    # persistence
    def state(self) -> dict[str, torch.Tensor]:
        tensors = {f"lora.{k}": v for k, v in _lora_state(self.vision).items()}
        tensors.update({f"head.{k}": v.cpu() for k, v in self.head.state_dict().items()})
        if self.global_projector is not None:
            tensors["global_projector"] = self.global_projector
        return tensors

    def save(self, path) -> Path:
        self._check_fitted()
        return _save(path, self.kind, self.state(), {"config": self.config.to_json(), "backbone": self.backbone.identity,
                                                     "backbone_source": self.backbone.source})

    @classmethod
    def load(cls, path, backbone: Backbone) -> NSNet:
        tensors, meta = _load(path, cls.kind, backbone)
        det = cls(backbone, NSNetConfig.from_json(meta["config"]))
        lora = {k[len("lora."):]: v for k, v in tensors.items() if k.startswith("lora.")}
        missing = set(_lora_state(det.vision)) - set(lora)
        if missing:
            raise ValueError(f"{path}: LoRA weights missing for {sorted(missing)[:3]}...")
        det.vision.load_state_dict(lora, strict=False)
        det.head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
        det.global_projector = tensors.get("global_projector")
        det.vision.eval()
        det.fitted = True
        return det


# --- baselines -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeConfig:
    """UnivFD's linear probe (the paper trains it with Adam and BCE on frozen features); *toy* epochs and lr."""
    epochs: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0


class UnivFD(_Detector):
    """Ojha et al. (CVPR 2023): a linear classifier on frozen CLIP image features (no patch selection, no caption)."""
    kind = "univfd"
    name = "UnivFD"

    def __init__(self, backbone: Backbone, config: ProbeConfig | None = None):
        self.backbone = backbone
        self.config = config or ProbeConfig()
        self.head = nn.Linear(backbone.dim, 1)
        self.mean = torch.zeros(backbone.dim)
        self.std = torch.ones(backbone.dim)
        self.fitted = False

    def fit(self, images, labels, captions=None, progress: bool = False) -> UnivFD:
        import time
        t0 = time.perf_counter()
        images = check_images(images)
        y = _labels(labels, len(images))
        x = self.backbone.image_features(images)
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - self.mean) / self.std
        self.head = _init_linear(nn.Linear(z.shape[1], 1), torch.Generator().manual_seed(self.config.seed))
        opt = torch.optim.Adam(self.head.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        for _ in tqdm(range(self.config.epochs), desc="UnivFD", disable=not progress, mininterval=2):
            loss = F.binary_cross_entropy_with_logits(self.head(z).squeeze(1), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self.fitted = True
        self.fit_seconds = time.perf_counter() - t0
        return self

    def predict_proba(self, images, captions=None) -> np.ndarray:
        self._check_fitted()
        images = check_images(images)
        with torch.no_grad():
            z = (self.backbone.image_features(images) - self.mean) / self.std
            return torch.sigmoid(self.head(z).squeeze(1)).numpy()

    def save(self, path) -> Path:
        self._check_fitted()
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        tensors.update(mean=self.mean, std=self.std)
        return _save(path, self.kind, tensors, {"config": json.dumps(asdict(self.config)),
                                                "backbone": self.backbone.identity,
                                                "backbone_source": self.backbone.source})

    @classmethod
    def load(cls, path, backbone: Backbone) -> UnivFD:
        tensors, meta = _load(path, cls.kind, backbone)
        det = cls(backbone, ProbeConfig(**json.loads(meta["config"])))
        det.head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
        det.mean, det.std = tensors["mean"], tensors["std"]
        det.fitted = True
        return det


@dataclass(frozen=True)
class CNNConfig:
    """The CNNSpot analog: a CNN from scratch on the pixels, BCE, flips; *toy* sizes."""
    channels: tuple[int, ...] = (32, 64, 128)
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0


class _CNN(nn.Module):
    def __init__(self, channels):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, 1)

    def forward(self, x):
        return self.fc(self.net(x).mean(dim=(2, 3))).squeeze(1)


class SmallCNN(_Detector):
    """Wang et al. (CVPR 2020) trained a ResNet-50 on ProGAN images; the toy's is a 3-block CNN on the 32-px
    pixels (normalised to [-1, 1]), no caption, no CLIP."""
    kind = "cnn"
    name = "CNN"

    def __init__(self, config: CNNConfig | None = None, size: int = 32):
        self.config = config or CNNConfig()
        self.size = size
        self.net = _CNN(self.config.channels)
        gen = torch.Generator().manual_seed(self.config.seed)
        with torch.no_grad():   # torch's default initialisations, drawn from the detector's own generator
            for m in self.net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
                    m.bias.uniform_(-1 / math.sqrt(m.weight[0].numel()), 1 / math.sqrt(m.weight[0].numel()),
                                    generator=gen)
                elif isinstance(m, nn.Linear):
                    _init_linear(m, gen)
        self.fitted = False

    def _pixels(self, images: np.ndarray) -> torch.Tensor:
        images = check_images(images, self.size)
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1

    def fit(self, images, labels, captions=None, progress: bool = False) -> SmallCNN:
        import time
        t0 = time.perf_counter()
        x = self._pixels(images)
        y = _labels(labels, len(x))
        cfg = self.config
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        n, b = len(x), cfg.batch_size
        gen = torch.Generator().manual_seed(cfg.seed)
        self.net.train()
        for _ in tqdm(range(cfg.epochs), desc="CNN", disable=not progress, mininterval=2):
            order = torch.randperm(n, generator=gen)
            for s in range(max(1, n // b)):
                idx = order[s * b:(s + 1) * b]
                xb = x[idx]
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                loss = F.binary_cross_entropy_with_logits(self.net(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.net.eval()
        self.fitted = True
        self.fit_seconds = time.perf_counter() - t0
        return self

    def predict_proba(self, images, captions=None) -> np.ndarray:
        self._check_fitted()
        x = self._pixels(images)
        with torch.no_grad():
            return torch.cat([torch.sigmoid(self.net(x[i:i + 512])) for i in range(0, len(x), 512)]).numpy()

    def save(self, path) -> Path:
        self._check_fitted()
        return _save(path, self.kind, dict(self.net.state_dict()),
                     {"config": json.dumps(asdict(self.config)), "size": str(self.size)})

    @classmethod
    def load(cls, path, backbone=None) -> SmallCNN:
        tensors, meta = _load(path, cls.kind, None)
        cfg = json.loads(meta["config"])
        cfg["channels"] = tuple(cfg["channels"])
        det = cls(CNNConfig(**cfg), int(meta["size"]))
        det.net.load_state_dict(tensors)
        det.net.eval()
        det.fitted = True
        return det


def _save(path, kind: str, tensors: dict, meta: dict) -> Path:
    from .._io import write_safetensors
    return write_safetensors(path, tensors, {"format": FORMAT, "kind": kind, **meta})


def _load(path, kind: str, backbone: Backbone | None):
    from .._io import read_safetensors
    tensors, meta = read_safetensors(path, "detector", FORMAT)
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} detector, not {kind!r}")
    if backbone is not None and meta.get("backbone") and meta["backbone"] != backbone.identity:
        raise ValueError(f"{path} was trained on another backbone ({meta.get('backbone_source')!r}, identity "
                         f"{meta['backbone']}) than {backbone.source!r} ({backbone.identity}): other CLIP weights, "
                         "preprocessing or captioner")
    return tensors, meta


DETECTORS = ("NS-Net", "CLIP+LoRA", "UnivFD", "CNN")
NSNET_CONFIGS = {"toy": NSNetConfig, "sd14": NSNetConfig.sd14}   # each profile's NS-Net settings


def make_detector(name: str, backbone: Backbone, seed: int = 0, profile: str = "toy", **overrides) -> _Detector:
    """A fresh detector by name (:data:`DETECTORS`) with ``profile``'s settings (NS-Net / CLIP+LoRA: ``overrides``
    go to :class:`NSNetConfig`)."""
    if profile not in NSNET_CONFIGS:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(NSNET_CONFIGS)}")
    if name in ("NS-Net", "CLIP+LoRA"):
        base = NSNET_CONFIGS[profile]
        cfg = base(seed=seed, **({"projection": None} if name == "CLIP+LoRA" else {}), **overrides)
        return NSNet(backbone, cfg)
    if name == "UnivFD":
        return UnivFD(backbone, ProbeConfig(seed=seed))
    if name == "CNN":
        return SmallCNN(CNNConfig(seed=seed), size=backbone.resize_to or backbone.image_size)
    raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")


__all__ = ["Backbone", "CNNConfig", "DETECTORS", "NSNET_CONFIGS", "NSNet", "NSNetConfig", "ProbeConfig", "SmallCNN",
           "UnivFD", "check_images", "make_detector", "square_crop"]
