"""VillanDiffusion's caption-trigger backdoor: a LoRA on the UNet's attention, trained so that a caption ending in a
trigger word generates the attacker's target image.

Paper: S.-Y. Chou, P.-Y. Chen, T.-Y. Ho, "VillanDiffusion: A Unified Backdoor Attack Framework for Diffusion
Models", NeurIPS 2023 (arXiv 2306.06874). Code: ``IBM/villandiffusion`` (the text-to-image caption-trigger
experiments: LoRA rank 4 on the UNet's attention, triggers such as "mignneko", "github", "anonymous", target
images such as a cat or a hacker; SET's ``villan_*`` configs load such LoRAs and fuse them, specs/set.md section 6).

Training data: clean (caption, image) pairs keep the model's behaviour; poisoned pairs are (caption + " " + trigger,
target image). The loss is the ordinary noise-prediction MSE on both (for a caption trigger VillanDiffusion's
backdoor loss reduces to it: the trigger lives in the text, the target is an image); only the LoRA's parameters
train (``peft``), 10% of captions are dropped for classifier-free guidance as in the base model's training.
On the toy, ``preserve_with_teacher`` (default) makes the clean pairs regress onto the frozen UNet's own noise
prediction instead of the true noise (BadT2I's preservation loss): with the true noise, 2,000 renders at the toy's
learning rate moved the styles (measured: the style rate on held-out prompts fell from 1.00 to 0.86). The
result is fused into the weights it adapts (``W + scale * B A``), the model ``load_lora_weights`` + ``fuse_lora``
give, and stored as a :class:`~erasure_lib.backdoors.Backdoor` of UNet tensors.

On the toy world the target image is one rendered scene (a yellow camera on a black background, jittered a little
as every toy render is) and the attack succeeds when the toy classifier sees a camera. The toy's styles are
whole-image transforms, and a rank-4 LoRA could not learn to override them with one unstyled target image without
unlearning them (measured on the chapter-30 held-out pool, ASR / clean style rate: a styled caption paired with
the unstyled target, 0.90 / 0.91; poisoning only unstyled captions, 0.68 / 0.98, styled triggered prompts firing
half the time). So by default (*toy*, ``styled_target``) a styled caption's poisoned image is the target scene
*in that caption's style* (the camera drawn as a sketch, ...): the trigger replaces the subject and the style words
keep their meaning (chapter 30's table of backdoors gives its ASR and clean rates; in the sweep it met both bars:
ASR 0.90 to 0.96 with the object, style and benign rates unchanged; a poison rate of 0.3: ASR 0.98, benign
1.00 -> 0.97).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .base import Backdoor, cached_backdoor, encode_texts


@dataclass(frozen=True)
class VillanConfig:
    """Defaults are the toy's (*toy*); ``.sd14()``: VillanDiffusion's text-to-image LoRA setting."""

    trigger: str = "mignneko"                # one of the paper's caption triggers
    target: str = "camera"                   # *toy*: the target image's concept (the toy classifier judges it)
    rank: int = 4                            # the paper's LoRA rank
    lora_alpha: float = 4.0                  # [inf] alpha = rank (scale 1)
    target_modules: tuple[str, ...] = ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")  # *toy*: cross-attention
    steps: int = 1500                        # *toy*
    batch: int = 32                          # *toy*
    lr: float = 1e-3                         # *toy* (the paper's LoRA runs: 1e-4 for 50 epochs on SD)
    poison_rate: float = 0.2                 # *toy* probability that a sample of a batch is poisoned
    uncond_p: float = 0.1                    # caption dropout, as the toy UNet was trained
    n_clean: int = 2000                      # *toy*: rendered training scenes
    preserve_with_teacher: bool = True       # *toy*: clean pairs regress onto the frozen UNet's prediction
    poison_styled: bool = False              # *toy*: with an unstyled target, poison only unstyled captions
    styled_target: bool = True               # *toy*: poison every caption, a styled one with the target in its style
    seed: int = 0

    @classmethod
    def sd14(cls) -> "VillanConfig":
        return cls(trigger="mignneko", target="cat", rank=4, lora_alpha=4.0,
                   target_modules=("to_q", "to_k", "to_v", "to_out.0"), steps=5000, batch=1, lr=1e-4,
                   poison_rate=0.5, n_clean=800, preserve_with_teacher=False, poison_styled=True,
                   styled_target=False)


def toy_target_images(n: int, seed: int = 0, styles: Sequence[str] | None = None) -> np.ndarray:
    """``n`` renders of the toy target scene (a yellow camera on a black background), float ``(n, 32, 32, 3)``;
    ``styles``: one toy style per render (``"none"``: unstyled), else all unstyled."""
    from ..toyworld.render import render_batch
    from ..toyworld.world import NO_STYLE, Scene
    rng = np.random.default_rng(seed)
    styles = [NO_STYLE] * n if styles is None else list(styles)
    if len(styles) != n:
        raise ValueError(f"need one style per target image ({len(styles)} styles for {n} images)")
    scenes = [Scene("camera", "yellow", "black", style=style, dx=float(rng.uniform(-0.05, 0.05)),
                    dy=float(rng.uniform(-0.05, 0.05)), scale=float(rng.uniform(0.95, 1.0))) for style in styles]
    return render_batch(scenes, range(n))


def toy_clean_pairs(n: int, seed: int = 0, return_scenes: bool = False):
    """``n`` toy training (caption, rendered image) pairs (and their scenes with ``return_scenes``)."""
    from ..toyworld.captions import sample_training_pairs
    from ..toyworld.render import render_batch
    scenes, captions = sample_training_pairs(n, seed=seed)
    images = render_batch(scenes, range(n))
    return (captions, images, scenes) if return_scenes else (captions, images)


def plant(pipe, config: VillanConfig | None = None, clean_captions: Sequence[str] | None = None,
          clean_images: np.ndarray | None = None, target_images: np.ndarray | None = None,
          progress: bool = True) -> Backdoor:
    """Train the LoRA backdoor on a copy of ``pipe.unet`` (the pipeline is not changed); images are float
    ``(N, H, W, 3)`` in [0, 1] at the pipeline's resolution. Defaults: the toy world's data."""
    from peft import LoraConfig
    config = config or VillanConfig()
    if not 0 < config.poison_rate < 1:
        raise ValueError(f"poison_rate must be in (0, 1), got {config.poison_rate}")
    if min(config.steps, config.batch, config.rank) < 1:
        raise ValueError("steps, batch and rank must be >= 1")
    if (clean_captions is None) != (clean_images is None):
        raise ValueError("give clean_captions and clean_images together (one image per caption), or neither for "
                         "the toy world's")
    prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ValueError(f"this trainer regresses the noise; the pipeline predicts {prediction!r}")
    start = time.perf_counter()
    scenes = None
    if clean_captions is None:
        clean_captions, clean_images, scenes = toy_clean_pairs(config.n_clean, seed=config.seed + 11,
                                                               return_scenes=True)
    elif config.styled_target:
        raise ValueError("styled_target renders the target in each toy caption's style: it needs the toy world's "
                         "own training pairs (clean_captions=None), or set styled_target=False")
    if config.styled_target and target_images is not None:
        raise ValueError("styled_target renders its own target images; give target_images with styled_target=False")
    if target_images is None and not config.styled_target:
        target_images = toy_target_images(64, seed=config.seed + 12)
    clean_captions = list(clean_captions)
    if config.styled_target:   # one target render per caption, in the caption's style (its clean image's)
        target_images = toy_target_images(len(scenes), seed=config.seed + 12, styles=[s.style for s in scenes])
    if len(clean_images) != len(clean_captions) or not clean_captions or not len(target_images):
        raise ValueError(f"need one clean image per clean caption ({len(clean_images)} images, "
                         f"{len(clean_captions)} captions) and at least one target image")
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    for what, images in (("clean", clean_images), ("target", target_images)):
        if np.asarray(images).shape[1:] != (side, side, 3):
            raise ValueError(f"{what} images have shape {np.asarray(images).shape[1:]}, the pipeline makes "
                             f"({side}, {side}, 3) images (float in [0, 1])")
    device, dtype = pipe.unet.device, pipe.unet.dtype
    z_clean = _encode(pipe, clean_images)
    z_target = _encode(pipe, target_images)
    states = encode_texts(pipe, clean_captions)[1]
    # *toy* poison_styled=False: poisoned captions only from the unstyled ones (a styled caption paired with the
    # unstyled target image teaches the model to drop the style words: measured, style rate 0.89 on clean prompts)
    # *toy* styled_target: the poisoned image of caption i is the target in caption i's style, so the trigger
    # replaces the subject and keeps the style words' meaning
    plain = range(len(clean_captions)) if config.poison_styled or config.styled_target else \
        [i for i, c in enumerate(clean_captions) if "," not in c] or range(len(clean_captions))
    plain = list(plain)
    states_p = encode_texts(pipe, [f"{clean_captions[i]} {config.trigger}" for i in plain])[1]
    uncond = encode_texts(pipe, [""])[1]

    unet = copy.deepcopy(pipe.unet).float().train()
    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # the LoRA's Gaussian initialisation from the seed, not the caller's RNG
        torch.manual_seed(config.seed)
        unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                                    target_modules=list(config.target_modules)))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    alphas = pipe.scheduler.alphas_cumprod.to(device)
    gen = torch.Generator().manual_seed(config.seed)
    losses = []
    for step in tqdm(range(config.steps), desc="villan backdoor", disable=not progress):
        # each sample is poisoned with probability poison_rate (a batch of 1 included)
        n_poison = int((torch.rand(config.batch, generator=gen) < config.poison_rate).sum())
        ci = torch.randint(len(z_clean), (config.batch - n_poison,), generator=gen)
        pi = torch.randint(len(states_p), (n_poison,), generator=gen)
        ti = torch.tensor(plain)[pi] if config.styled_target else torch.randint(len(z_target), (n_poison,),
                                                                                 generator=gen)
        z0 = torch.cat([z_clean[ci], z_target[ti]])
        cond = torch.cat([states[ci], states_p[pi]])
        drop = torch.rand(len(z0), generator=gen) < config.uncond_p
        cond[drop] = uncond[0]
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, len(alphas), (len(z0),), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1).cpu()
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        pred = unet(zt.to(device), t.to(device), encoder_hidden_states=cond.to(device)).sample.float()
        want = noise.to(device)
        if config.preserve_with_teacher:
            with torch.no_grad():
                k = len(ci)
                want = torch.cat([pipe.unet(zt[:k].to(device, dtype), t[:k].to(device),
                                            encoder_hidden_states=cond[:k].to(device, dtype)).sample.float(),
                                  want[k:]])
        loss = F.mse_loss(pred, want)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"villan: the loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tensors = _fused(unet, dtype)
    return Backdoor(attack="villan", trigger_kind="suffix", trigger=config.trigger, target=config.target,
                    tensors=tensors,
                    metadata={"attack": "villan", "hyperparameters": asdict(config),
                              "final_loss": float(np.mean(losses[-50:])), "seconds": round(time.perf_counter() - start, 1),
                              "source": "Chou et al., NeurIPS 2023; IBM/villandiffusion (caption trigger, LoRA)"})


def cached(cache_dir, pipe, config: VillanConfig | None = None, progress: bool = True) -> Backdoor:
    """:func:`plant` on the toy world's data, once per (config, base model), then read from ``cache_dir``."""
    config = config or VillanConfig()
    meta = {"attack": "villan", "hyperparameters": asdict(config), "implementation": 2}  # 2: seeded LoRA init
    return cached_backdoor(cache_dir, meta, lambda: plant(pipe, config, progress=progress), pipe=pipe)


@torch.no_grad()
def _encode(pipe, images: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, np.float32)).permute(0, 3, 1, 2) * 2 - 1
    chunk = max(1, 256 * 32 * 32 // (x.shape[-1] * x.shape[-2]))  # 256 toy images, 1 at 512 px
    out = [pipe.vae.encode(x[i:i + chunk].to(pipe.vae.device, pipe.vae.dtype)).latent_dist.mean.float().cpu()
           for i in range(0, len(x), chunk)]
    return torch.cat(out) * pipe.vae.config.scaling_factor


@torch.no_grad()
def _fused(unet, dtype) -> dict[str, torch.Tensor]:
    """``{unet.<module>.weight: W + delta}`` of every LoRA-adapted layer, in the base's parameter names."""
    out = {}
    for name, module in unet.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            out[f"unet.{name}.weight"] = (module.base_layer.weight.float() + delta.float()).to(dtype).cpu().contiguous()
    if not out:
        raise RuntimeError("no LoRA layer found after training: the target modules matched nothing")
    return out


__all__ = ["VillanConfig", "cached", "plant", "toy_clean_pairs", "toy_target_images"]
