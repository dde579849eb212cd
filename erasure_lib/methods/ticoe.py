"""TICoE: text-image collaborative concept erasure with a convex prompt manifold.

Paper: J. Li, L. Xiong, Z. Li, W. Jiang, Z. Fu, Y. Li, G.-S. Xie, "Beyond Text Prompts: Precise Concept Erasure
through Text-Image Collaboration", CVPR 2026 (arXiv 2604.15829). Code: ``OpenAscent-L/TICoE`` (``TICoE_train.py``
@ b563482, ``ticoe/hvrl.py`` @ 54a34d2, ``ticoe/prompt_bank.py`` @ 008478b; read, nothing copied). Spec:
``specs/ticoe.md``. The loss is ESD's negative guidance (:mod:`.esd`, Gandikota et al., ICCV 2023).

TICoE fine-tunes the **whole** UNet against negative guidance on the concept, like ESD, but changes both inputs of
the loss (one iteration, batch 1)::

    CCCM (text)   every K iterations: w ~ Dirichlet(1/tau * 1_N) over the bank's N prompts
                  e_c = LN( sum_i w_i LN(E(p_i)) + N(0, sigma^2) )          E: the text encoder, all 77 states
    HVRL (image)  x ~ the reference images (the original model's, of the concept); z_0 = s * VAE.enc(x).sample()
                  b ~ U{0..bins-1}, t ~ U[b T/bins, (b+1) T/bins);  z_t = DDPM.add_noise(z_0, eps, t)
                  tokens = concat_scales( flatten(resize(z_t, scale)) ) + sinusoidal positions
                  t' = the first h*w tokens of TransformerEncoder(tokens), as a latent;  z = z_t + lambda t'
    loss          target = e_0(z) - gamma (e_c(z) - e_0(z))          the frozen UNet, no grad (e_0: E(""), no LN)
                  L = MSE(eps_theta(z, t, e_c), target)              one Adam step on the UNet and on HVRL

The mixture stays inside the convex hull of the bank (before the final LayerNorm), so the model is pushed away
from a *region* of text space around the concept instead of from one prompt; the reference images put ``z_t`` where
the concept's images actually are; HVRL learns a residual on it and is discarded after training. Only the UNet's
weights are returned (an edit of every UNet parameter: :func:`erase`).

Where this module differs from the code, and why (spec section 6 and 10)
    * Everything is seeded (the code seeds nothing): the reference images' seeds, the image drawn, the timestep
      bin and value, the noise, the VAE posterior sample, the Dirichlet weights (numpy's generator), the mixture's
      noise, HVRL's initialisation and its dropout (torch's global generator, forked for the call).
    * The reference images are generated here by ``pipe`` itself (:func:`reference_images`); the code reads 200
      images generated beforehand, unseeded, by ``AutoPipelineForText2Image`` with its defaults.
    * Each image's VAE posterior (mean, std) is computed once; each iteration draws ``z_0 = mean + std * n`` with
      a fresh ``n``: the code's ``latent_dist.sample()`` per iteration, the same distribution, one VAE encode per
      image instead of one per iteration.
    * The frozen model is ``pipe.unet``'s own tensors, swapped back in for the teacher call
      (:class:`.esd.TrainedTensors`); the code keeps a second UNet. The same numbers, one UNet's memory fewer.
    * ``bank_layernorm=False`` and ``cccm=False`` are the ablation's switches; the code has neither.

The code's values are :meth:`TICoEConfig.sd14` (SD 1.5 in the code; SD v1.4 here, which has the same UNet and text
encoder architecture). The toy values differ where marked *toy*, with the measured reason.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..sampling import encode_prompts, generate
from . import esd
from .edits import Edit

BANK_DIR = Path(__file__).resolve().parents[2] / "data" / "prompt_banks"
# The released banks (configs/prompt_banks/*.json of OpenAscent-L/TICoE), pinned to the commits the spec read; the
# sd14 profile downloads them on first use into the prompt cache (erasure_lib.prompts' folder), checks that each is a
# bank, and records its prompts' hash in the edit's metadata.
SD14_BANKS = {
    "nudity": ("nudity.json", "3354f366e7fc310cc80102c12982e57ecda67312"),
    "tench": ("tench.json", "a312992c0f0cc8fd6cdb78d7fd5320267c1b040d"),
    "Van Gogh": ("van_gogh.json", "e364081722a12ccf5a248209ff7f34e374df50cb"),
    "church": ("church.json", "2b1bbdb67ed393000cf8450551e46f8999b711a5"),
    "gun": ("gun.json", "a521020814de7413ebc3745ba82c06937b0b685e"),
}
_BANK_URL = "https://raw.githubusercontent.com/OpenAscent-L/TICoE/{commit}/configs/prompt_banks/{file}"
# The code's reference-image prompts per concept (data_generation/generate_reference_images.py, spec section 1),
# keyed by the sd14 profile's concept names (erasure_lib.tasks.SD14_CONCEPTS)
SD14_REFERENCE_PROMPTS = {"nudity": "a photo of nudity", "Van Gogh": "a painting drawn by Van Gogh",
                          "church": "a photo of church", "tench": "a photo of tench", "gun": "a photo of gun"}


@dataclass(frozen=True)
class TICoEConfig:
    """TICoE hyper-parameters: the code's values (``TICoE_train.py`` @ b563482, spec section 6) unless marked *toy*.

    ``lr``: the code's 1e-5 on both profiles. Measured on the toy zoo (tench, 500 iterations, the held-out object
    and look-alike prompts, 3 images each, CFG 5; unedited: tench 1.00, goldfish 1.00, other objects 1.00): 1e-5
    takes tench to 0.25 with goldfish 1.00 and other objects 1.00; 1e-4 to 0.04, but goldfish falls to 0.42 and
    other objects to 0.95; 3e-4 and 1e-3 break the model (other objects 0.48 and 0.14).
    ``reference_steps`` / ``reference_guidance`` *toy* 25 / 5 (the code: the SD pipeline's defaults, 50 / 7.5), the
    toy's evaluation settings."""

    iterations: int = 500
    lr: float = 1e-5                 # the code's (toy: measured, see above)
    hvrl_lr_factor: float = 5.0      # HVRL's lr = 5 x the UNet's (the code's args.lr * 5.0; 5e-5 on SD)
    negative_guidance: float = 1.0   # gamma
    parameter_set: str = "full"      # the whole UNet (the code); any esd.PARAMETER_SETS for comparison
    # CCCM
    cccm: bool = True                # False: the ablation's "No CCCM": the concept prompt's own states (LayerNorm'd
                                     # as a mixture is, with bank_layernorm), no mixture
    bank_size: int | None = None     # the first n prompts of the bank (ablation: 10 / 20); None: all of it
    temperature: float = 0.7         # tau; Dirichlet concentration 1 / tau
    noise_std: float = 1e-3          # sigma of the noise added to the mixture (the code's; the paper gives none)
    resample_every: int = 200        # iterations between fresh mixtures (500 iterations: 3 mixtures)
    bank_layernorm: bool = True      # LayerNorm (no affine) of the bank and of the mixture, as the code
    # HVRL
    hvrl: bool = True                # False: the ablation's "No HVRL": z = z_t
    scales: tuple = (1.0, 0.75, 0.5)
    hvrl_depth: int = 2
    hvrl_heads: int = 4
    hvrl_ff_factor: int = 4          # feed-forward width = 4 x the latent channels (16 on SD)
    hvrl_dropout: float = 0.1        # nn.TransformerEncoderLayer's default, active in training (the code's)
    fusion_weight: float = 0.5       # lambda of z = z_t + lambda t'
    timestep_bins: int = 50          # num_inference_steps of the code: t drawn in one of 50 bins of width 20
    # reference images
    reference_images: int = 200      # the code's image_number
    reference_prompt: str | None = None  # None: the concept prompt; sd14: "a photo of {concept}" (the code's for its
                                     # objects and nudity; Van Gogh: SD14_REFERENCE_PROMPTS)
    reference_steps: int = 25        # *toy* (code: 50, the pipeline's default)
    reference_guidance: float = 5.0  # *toy* (code: 7.5)
    seed: int = 0
    # memory (as in esd; neither changes the toy numbers)
    gradient_checkpointing: bool = False
    optimizer: str = "adam"          # the UNet's: "adam" (the code's), "adafactor" or "adam8bit"; HVRL: always Adam

    def __post_init__(self):
        if self.parameter_set not in esd.PARAMETER_SETS:
            raise ValueError(f"TICoEConfig.parameter_set={self.parameter_set!r}; valid: {', '.join(esd.PARAMETER_SETS)}")
        if self.optimizer not in esd.OPTIMIZERS:
            raise ValueError(f"TICoEConfig.optimizer={self.optimizer!r}; valid: {', '.join(esd.OPTIMIZERS)}")
        if min(self.iterations, self.resample_every, self.timestep_bins, self.reference_images, self.hvrl_depth,
               self.hvrl_heads, self.hvrl_ff_factor, self.reference_steps) < 1:
            raise ValueError("iterations, resample_every, timestep_bins, reference_images, hvrl_depth, hvrl_heads, "
                             "hvrl_ff_factor and reference_steps must be >= 1")
        if not (self.lr > 0 and self.hvrl_lr_factor > 0 and self.temperature > 0):
            raise ValueError("lr, hvrl_lr_factor and temperature must be > 0")
        if self.noise_std < 0 or self.fusion_weight < 0 or not 0 <= self.hvrl_dropout < 1:
            raise ValueError("noise_std and fusion_weight must be >= 0, hvrl_dropout in [0, 1)")
        if self.bank_size is not None and self.bank_size < 2:
            raise ValueError("bank_size must be >= 2 (a mixture needs two prompts) or None; cccm=False for one prompt")
        if not self.scales or any(not 0 < s <= 1 for s in self.scales) or self.scales[0] != 1.0:
            raise ValueError(f"scales must start with 1.0 (the fused latent is read at full size), each in (0, 1]; "
                             f"got {self.scales}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    @classmethod
    def sd14(cls, **overrides) -> "TICoEConfig":
        """The code's values (SD 1.5 there; SD v1.4 has the same UNet): Adam at 1e-5 (HVRL 5e-5), 500 iterations,
        200 reference images of "a photo of {concept}" at the pipeline's defaults (50 steps, CFG 7.5; the code's
        prompt for Van Gogh is "a painting drawn by Van Gogh": :data:`SD14_REFERENCE_PROMPTS`), with
        gradient checkpointing (memory only). For a 16 GB T4 pass ``optimizer="adafactor"`` (the chapter's
        memory table)."""
        return cls(**{**dict(reference_steps=50, reference_guidance=7.5,
                             reference_prompt="a photo of {concept}", gradient_checkpointing=True), **overrides})


# --- the prompt bank ------------------------------------------------------------------------------------------

def load_bank(concept: str, profile: str = "toy", cache_dir=None, download: bool = True) -> list[str]:
    """The prompt bank of ``concept``: toy, the committed ``data/prompt_banks/toy/<concept>.json``
    (:mod:`erasure_lib.toyworld.banks`); sd14, the released bank (:data:`SD14_BANKS`), downloaded once into the
    prompt cache (:func:`erasure_lib.prompts.default_cache_dir`, or ``cache_dir``) and read from there; ``$ERASURE_BOOK_TICOE_BANKS``
    names a folder of bank files to read instead (offline)."""
    import os
    if profile == "toy":
        from ..toyworld.banks import BANK_CONCEPTS, bank_path
        if concept not in BANK_CONCEPTS:
            raise ValueError(f"no toy prompt bank for {concept!r}; banks: {', '.join(BANK_CONCEPTS)}")
        return read_bank(bank_path(concept))
    if profile != "sd14":
        raise ValueError(f"unknown profile {profile!r}; valid profiles: toy, sd14")
    if concept not in SD14_BANKS:
        raise ValueError(f"no released TICoE prompt bank for {concept!r}; banks: {', '.join(SD14_BANKS)}")
    file, commit = SD14_BANKS[concept]
    if os.environ.get("ERASURE_BOOK_TICOE_BANKS"):
        return read_bank(Path(os.environ["ERASURE_BOOK_TICOE_BANKS"]) / file)
    from ..prompts import _cache
    path = _cache(cache_dir) / "ticoe_banks" / f"{commit[:12]}-{file}"
    if not path.exists():
        if not download:
            raise FileNotFoundError(f"TICoE bank {file} is not cached at {path} and download=False")
        _download(_BANK_URL.format(commit=commit, file=file), path)
    return read_bank(path)


def _download(url: str, path: Path) -> None:
    import urllib.request

    from .._io import atomic_path
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as err:
        raise ConnectionError(f"could not download the TICoE prompt bank {url} ({err}); offline, put the bank files "
                              f"in a folder and set ERASURE_BOOK_TICOE_BANKS to it") from None
    json.loads(data)  # an HTML error page is not a bank
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def read_bank(path) -> list[str]:
    """The prompts of a bank file in the code's format, ``{"concept": str, "prompts": [str, ...]}``; raises on
    anything else (a missing file, no prompts, an empty prompt)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no prompt bank at {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"{path} is not a prompt bank: a JSON object with a non-empty list of non-empty 'prompts'")
    return [p.strip() for p in prompts]


def bank_hash(prompts: Sequence[str]) -> str:
    """SHA-256 (first 16 hex digits) of a bank's prompts in order: what the edit's metadata records."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]


def encode_bank(pipe, prompts: Sequence[str], layernorm: bool = True) -> torch.Tensor:
    """The bank as text-encoder states ``(N, 77, d)`` (fp32), each LayerNorm'd over ``d`` without affine parameters
    (the code's ``build_cccm_prompt_bank``) unless ``layernorm=False``."""
    with torch.no_grad():
        states = encode_prompts(pipe, list(prompts)).float()
    return F.layer_norm(states, states.shape[-1:]) if layernorm else states


def dirichlet_weights(n: int, temperature: float, rng: np.random.Generator) -> torch.Tensor:
    """Mixture weights ``w ~ Dirichlet(1/temperature * 1_n)`` (non-negative, summing to 1), from numpy's seeded
    generator (torch's Dirichlet takes no generator)."""
    return torch.from_numpy(rng.dirichlet(np.full(n, 1.0 / temperature))).float()


def mix_bank(bank: torch.Tensor, weights: torch.Tensor, noise: torch.Tensor | None = None,
             layernorm: bool = True) -> torch.Tensor:
    """CCCM's condition ``LN(sum_i w_i bank_i + noise)``, shape ``(1, 77, d)``. Before the LayerNorm the mixture
    lies in the bank's convex hull (with ``noise=None``)."""
    if bank.ndim != 3 or bank.shape[0] != weights.shape[0]:
        raise ValueError(f"a bank (N, L, d) and N weights, got {tuple(bank.shape)} and {tuple(weights.shape)}")
    mixed = (weights.to(bank).view(-1, 1, 1) * bank).sum(0, keepdim=True)
    if noise is not None:
        mixed = mixed + noise.to(mixed)
    return F.layer_norm(mixed, mixed.shape[-1:]) if layernorm else mixed


class CCCM:
    """The text side: ``condition(iteration)`` is the current mixture, re-drawn at iteration 0 and every
    ``resample_every`` iterations (``draws`` counts them)."""

    def __init__(self, bank: torch.Tensor, params: TICoEConfig, rng: np.random.Generator, gen: torch.Generator):
        if bank.shape[0] < 2:
            raise ValueError(f"CCCM mixes a bank of >= 2 prompts; got {bank.shape[0]} (cccm=False for one prompt)")
        self.bank, self.params, self.rng, self.gen = bank, params, rng, gen
        self.draws, self.weights, self._current = 0, None, None

    def condition(self, iteration: int) -> torch.Tensor:
        if self._current is None or iteration % self.params.resample_every == 0:
            p = self.params
            self.weights = dirichlet_weights(len(self.bank), p.temperature, self.rng)
            noise = torch.randn(self.bank.shape[1:], generator=self.gen) * p.noise_std if p.noise_std > 0 else None
            self._current = mix_bank(self.bank, self.weights, noise[None] if noise is not None else None,
                                     p.bank_layernorm)
            self.draws += 1
        return self._current


# --- HVRL -----------------------------------------------------------------------------------------------------

class HVRL(torch.nn.Module):
    """Hierarchical visual representation learning: the noisy latent at several scales as one token sequence (a
    token per latent pixel, ``d`` = the latent channels), sinusoidal positions, a small transformer encoder, the
    full-scale tokens read back as a latent ``t'``; returns ``z_t + fusion_weight * t'``."""

    def __init__(self, channels: int = 4, scales: Sequence[float] = (1.0, 0.75, 0.5), depth: int = 2,
                 heads: int = 4, ff_factor: int = 4, dropout: float = 0.1, fusion_weight: float = 0.5):
        super().__init__()
        if channels % heads:
            raise ValueError(f"HVRL: {heads} heads do not divide the latent's {channels} channels")
        self.scales, self.fusion_weight = tuple(scales), float(fusion_weight)
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(channels, heads, dim_feedforward=ff_factor * channels, dropout=dropout,
                                             batch_first=True) for _ in range(depth))

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)``: the latent resized (bilinear) to every scale, each flattened row-major, concatenated."""
        h, w = z.shape[-2:]
        parts = [F.interpolate(z, size=(int(h * s), int(w * s)), mode="bilinear", align_corners=False)
                 .flatten(2).transpose(1, 2) for s in self.scales]
        return torch.cat(parts, dim=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        x = self.tokens(z)
        x = x + sinusoidal_positions(x.shape[1], c, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return z + self.fusion_weight * x[:, : h * w].transpose(1, 2).reshape(b, c, h, w)


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """The transformer's sinusoidal position code ``(length, dim)``: sin on even, cos on odd channels, wavelengths
    up to 10000 (Vaswani et al. 2017)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


# --- reference images -----------------------------------------------------------------------------------------

def reference_images(pipe, concept: str, params: TICoEConfig = TICoEConfig(), progress: bool = False) -> np.ndarray:
    """``params.reference_images`` images of the concept from ``pipe`` as it is (the original model), prompt
    ``params.reference_prompt`` (``{concept}`` filled in; None: the concept prompt), seeded by ``params.seed``;
    uint8 ``(N, H, W, 3)``."""
    prompt = (params.reference_prompt or "{concept}").format(concept=concept)
    seeds = np.random.default_rng([params.seed, 1]).integers(0, 2**31 - 1, params.reference_images).tolist()
    return generate(pipe, [prompt] * len(seeds), seeds, steps=params.reference_steps,
                    guidance=params.reference_guidance, progress=progress)


@torch.no_grad()
def posterior(pipe, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of each image, scaled to the UNet's latent space: ``(mean, std)``, each ``(N, C, h, w)``
    fp32; ``mean + std * n`` (``n`` standard normal) is ``scaling_factor * vae.encode(x).latent_dist.sample()``.
    Images are resized (bilinear) to the size the UNet works at (its latent side times the VAE's scale factor: 512
    on SD) and scaled to [-1, 1], as the code's transform."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"reference images must be (N, H, W, 3) with N >= 1, got {images.shape}")
    vae = pipe.vae
    size = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    means, stds = [], []
    for part in x.split(16):
        dist = vae.encode(part.to(pipe.device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    scale = float(vae.config.scaling_factor)
    return torch.cat(means) * scale, torch.cat(stds) * scale


# --- training -------------------------------------------------------------------------------------------------

def erase(pipe, concept: str, params: TICoEConfig = TICoEConfig(), bank: Sequence[str] | None = None,
          images: np.ndarray | None = None, progress: bool = True, log: list | None = None) -> Edit:
    """Erase ``concept`` (its prompt, e.g. ``"tench"``) with TICoE; returns the edit: every UNet parameter of
    ``params.parameter_set`` (the whole UNet by default), trained, fp32.

    ``bank``: the CCCM prompts (required unless ``params.cccm`` is False; :func:`load_bank` gives the book's);
    ``images``: reference images of the concept (default: :func:`reference_images` of ``pipe``). ``pipe`` is not
    modified (its tensors are swapped during training and restored, also on an error). ``log`` receives one
    ``{"iteration", "loss", "t", "image", "draw"}`` dict per iteration. Raises on an empty bank, a one-prompt bank
    where a mixture is asked for, no reference images, and a loss that is not finite."""
    if not isinstance(concept, str) or not concept.strip():
        raise ValueError("give the concept as a non-empty prompt")
    prompts = _bank(bank, params, concept)
    unet, device, dtype = pipe.unet, pipe.device, pipe.unet.dtype
    gen = torch.Generator().manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)

    if images is None:
        images = reference_images(pipe, concept, params, progress=progress)
    z_mean, z_std = posterior(pipe, images)
    null = encode_prompts(pipe, [""]).float()                       # the code's uncond: no extra LayerNorm
    if params.cccm:
        text = CCCM(encode_bank(pipe, prompts, params.bank_layernorm), params, rng, gen)
    else:  # the concept prompt alone, normalised as a mixture would be: the ablation changes only the mixing
        fixed = encode_prompts(pipe, [concept]).float()
        fixed = F.layer_norm(fixed, fixed.shape[-1:]) if params.bank_layernorm else fixed
        text = None
    ddpm = _ddpm(pipe)
    if params.timestep_bins > ddpm.config.num_train_timesteps:
        raise ValueError(f"timestep_bins={params.timestep_bins} exceeds the {ddpm.config.num_train_timesteps} training "
                         "timesteps")
    width = ddpm.config.num_train_timesteps / params.timestep_bins
    names = esd.trainable_parameter_names(unet, params.parameter_set)

    # HVRL's initialisation and dropout draw from torch's global generator: forked for this call, seeded apart from gen
    fork = torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else [])
    with contextlib.ExitStack() as stack:
        stack.enter_context(fork)
        torch.manual_seed(params.seed + 1_000_003)
        hvrl = HVRL(z_mean.shape[1], params.scales, params.hvrl_depth, params.hvrl_heads, params.hvrl_ff_factor,
                    params.hvrl_dropout, params.fusion_weight).to(device).train() if params.hvrl else None
        trained = stack.enter_context(esd.TrainedTensors(unet, names))
        stack.enter_context(esd.gradient_checkpointing(unet, params.gradient_checkpointing))
        optimizers = [esd.make_optimizer(params.optimizer, trained.masters, params.lr)]
        if hvrl is not None:
            optimizers.append(esd.adam(hvrl.parameters(), params.lr * params.hvrl_lr_factor))
        scaler = esd.grad_scaler(device, dtype)
        bar = tqdm(range(params.iterations), desc=f"TICoE {concept}"[:60], disable=not progress)
        for it in bar:
            c = (text.condition(it) if text is not None else fixed).to(device)
            k = int(torch.randint(len(z_mean), (1,), generator=gen))
            b = int(torch.randint(params.timestep_bins, (1,), generator=gen))
            lo, hi = int(b * width), int((b + 1) * width)
            t = torch.randint(lo, hi, (1,), generator=gen)
            z0 = z_mean[k:k + 1] + z_std[k:k + 1] * torch.randn(z_mean[k:k + 1].shape, generator=gen)
            zt = ddpm.add_noise(z0, torch.randn(z0.shape, generator=gen), t).to(device)
            t = t.to(device)
            unet.train()
            z = hvrl(zt) if hvrl is not None else zt                # fp32, outside autocast, as the code runs it
            with esd.autocast(device, dtype):
                loss = negative_guidance_loss(unet, trained.frozen, z, t, c, null.to(device), params.negative_guidance)
            value = esd.optimisation_step(optimizers, loss, it, "TICoE", scaler)
            if log is not None:
                log.append({"iteration": it, "loss": value, "t": int(t), "image": k,
                            "draw": text.draws if text is not None else 0})
            if it % 25 == 0 or it == params.iterations - 1:
                bar.set_postfix(loss=f"{value:.4f}")
        return trained.values()


def negative_guidance_loss(unet, frozen, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, null: torch.Tensor,
                           gamma: float = 1.0) -> torch.Tensor:
    """``MSE(eps_trained(z, t, cond), e_0 - gamma (e_c - e_0))`` with ``e_c``, ``e_0`` the frozen model's predictions
    at the same ``z`` (``frozen()``: a context in which ``unet`` is the frozen model, e.g.
    :meth:`.esd.TrainedTensors.frozen`). The teacher runs under ``no_grad`` on ``z`` detached, so a module that made
    ``z`` (HVRL) receives gradient only through the trained model's branch, as in the code."""
    with torch.no_grad(), frozen():
        dtype = unet.dtype                                  # the frozen model's (fp16 on an fp16 base)
        e_c, e_0 = unet(torch.cat([z, z]).detach().to(dtype), torch.cat([t, t]),
                        encoder_hidden_states=torch.cat([cond, null]).to(dtype)).sample.chunk(2)
    target = esd.negative_guidance_target(e_c.float(), e_0.float(), gamma)
    pred = unet(z, t, encoder_hidden_states=cond).sample
    return F.mse_loss(pred.float(), target)


def _bank(bank, params: TICoEConfig, concept: str) -> list[str]:
    if not params.cccm:
        return list(bank or [concept])
    if bank is None:
        raise ValueError("CCCM needs a prompt bank: pass bank= (ticoe.load_bank(concept, profile)), or "
                         "TICoEConfig(cccm=False) for the concept prompt alone")
    prompts = list(bank)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("the prompt bank must be a non-empty list of non-empty prompts")
    if params.bank_size is not None:
        if params.bank_size > len(prompts):
            raise ValueError(f"bank_size={params.bank_size} but the bank has {len(prompts)} prompts")
        prompts = prompts[: params.bank_size]
    if len(prompts) < 2:
        raise ValueError(f"CCCM mixes >= 2 prompts; the bank has {len(prompts)} (TICoEConfig(cccm=False) trains on "
                         "the concept prompt alone)")
    return prompts


def _ddpm(pipe):
    """A DDPM scheduler with ``pipe``'s noise schedule: the code noises with ``DDPMScheduler.add_noise``."""
    from diffusers import DDPMScheduler
    return DDPMScheduler.from_config(pipe.scheduler.config)


# Bumped whenever a change alters the numbers training produces (the metadata records the hyper-parameters anyway).
IMPLEMENTATION = 1


def metadata(concept: str, params: TICoEConfig = TICoEConfig(), bank: Sequence[str] | None = None, pipe=None) -> dict:
    """What :func:`~erasure_lib.methods.save_edit` records for an edit of :func:`erase`: the config, the bank as
    trained (after ``bank_size``) and its hash; with ``pipe`` also the base model
    (:func:`~erasure_lib.methods.cache.base_model`)."""
    from .cache import base_model
    prompts = _bank(bank, params, concept)
    return {"method": "ticoe", "variant": _variant(params), "concept": concept, "hyperparameters": asdict(params),
            "bank": prompts if params.cccm else [], "bank_sha256": bank_hash(prompts) if params.cccm else "",
            "implementation": IMPLEMENTATION,
            "source": "Li et al., CVPR 2026 (arXiv 2604.15829); OpenAscent-L/TICoE",
            **(base_model(pipe) if pipe is not None else {})}


def _variant(params: TICoEConfig) -> str:
    parts = [p for p, on in (("no-cccm", not params.cccm), ("no-hvrl", not params.hvrl),
                             ("no-bank-ln", not params.bank_layernorm)) if on]
    if params.bank_size is not None:
        parts.append(f"bank{params.bank_size}")
    if params.scales != (1.0, 0.75, 0.5):
        parts.append("scales" + "-".join(f"{s:g}" for s in params.scales))
    return "+".join(parts) or "full"


__all__ = ["CCCM", "HVRL", "IMPLEMENTATION", "SD14_BANKS", "TICoEConfig", "SD14_REFERENCE_PROMPTS", "bank_hash", "dirichlet_weights",
           "encode_bank", "erase", "load_bank", "metadata", "mix_bank", "negative_guidance_loss", "posterior", "read_bank", "reference_images",
           "sinusoidal_positions"]
