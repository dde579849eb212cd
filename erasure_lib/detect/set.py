"""SET: input-level backdoor detection by attention scaling ("Scaling Exposes the Trigger").

Paper: Z. Li, J. Li, Y. Sha, Z. Li, L. Xiong, Z. Fu, "Scaling Exposes the Trigger: Input-Level Backdoor Detection in
Text-to-Image Diffusion Models via Cross-Attention Scaling", arXiv 2604.12446 (2026). Only the abstract could be
verified. Code: the official ``train.py`` / ``detect.py`` / ``ptp_utils.py``, read statically for the spec; its
repository's owner/name could **not** be verified from public sources (spec ``specs/set.md``, "Sources"). Everything
below follows the spec (sections 1-4: the code's algorithm; 9: notes for this library); nothing is copied.

Idea
    A trigger token takes over the cross-attention of the prompt it is in. Sharpening or flattening the attention
    (a temperature ``lambda`` on the logits) therefore moves a triggered prompt's attention output differently from
    a clean prompt's. SET measures that movement and learns, from clean prompts only, the region where it normally
    lies; a prompt outside it is flagged.

Probe (:func:`features`; spec 2, 3)
    For each batch of prompts, from each prompt's ``z_T``:

    1. baseline: ``n_steps`` (5) classifier-free-guided denoising steps at ``lambda = 1``, storing, at each step
       ``k`` and read layer ``l``, ``PV[k, l] = A V``, the attention output before the output projection,
       conditional branch, ``(B, H, Q, d_h)``;
    2. one run per ``lambda`` in ``scales`` ({0.2, 0.3, 7, 10, 20}), again from ``z_T``, with the read layers (and,
       code parity, every self-attention layer) at temperature ``lambda``; its trajectory evolves under the
       perturbation (it is not re-anchored to the baseline's latents);
    3. offset ``d[lambda, k, l] = mean((PV_lambda[k, l] - PV[k, l])^2)`` over channels, heads and positions;
    4. feature ``x`` of length ``S * T * L`` (125 on SD v1.4), ordered (scale, step, layer).

    The probes are attention processors (:mod:`.attention`), not a monkey-patched ``Attention.forward``.

One-class model (:func:`fit`; spec 4)
    Each dimension is z-scored with the clean training statistics. A DeepSets encoder reads the ``L`` layers as
    tokens of ``S * T`` offsets (the token of layer ``l`` is ``x[l::L]``, its offsets in (scale, step) order), maps
    each with a shared ``phi`` (Linear(S*T, 64) - GELU - Linear(64, 64) - GELU), pools the mean and the standard
    deviation over layers (128 values) and maps them with ``rho`` (Linear(128, 64) - GELU - Linear(64, 16, no
    bias)). Soft-boundary Deep-SVDD: centre ``c`` = mean initial embedding; loss
    ``R^2 + (1/nu) mean(max(0, |z - c|^2 - R^2))``, nu = 0.05; Adam lr 1e-3, weight decay 1e-4 on the encoder (none
    on ``R``), batch 256; 5 warm-up epochs, then ``c`` re-estimated as the mean of the embeddings without the 1% most
    distant, ``R`` reset to 0.1, a fresh Adam, 100 epochs with the learning rate cosine-annealed to 1e-5 (stepped
    once per epoch). Score ``s(x) = |f(x) - c|^2``; threshold ``tau`` = the (1 - nu)-quantile (95%) of the clean
    training scores in eval mode (``detect.py`` thresholds at ``radius**2`` so set); the 99% quantile and the learned
    ``R^2`` are stored too, unused.

Code parity and flags (``SETConfig``)
    * ``scale_self_attention=True``: the code also scales every self-attention layer during the probe runs; the
      paper speaks of cross-attention scaling only (``False``) [code, spec 2].
    * ``reset_scheduler_between_runs=False``: the code creates the sampler once per batch, so PNDM's multistep
      history carries over from the baseline into the first probe run and from each probe run into the next; in a
      probe run step 0 is then a 4th-order Adams-Bashforth step on the previous run's noise predictions and PNDM's
      repeated timestep is a real step. Probe trajectories leave the baseline from step 1 even at ``lambda = 1``,
      and each run depends on the one before. ``True`` gives independent runs [code, spec 3.6].
    * ``reuse_seed_per_batch=True``: the code seeds prompt ``i`` of every batch with ``seed + i`` (the same base seed
      for each batch of ``batch_size``=20), so a prompt's ``z_T`` depends on its position modulo the batch size;
      ``False`` uses ``seed + global index`` (the alternate module's ``seed + start``) [code, spec 1].
    * ``scheduler="pndm"``: SD v1.4's PNDM (PLMS, ``skip_prk_steps``) on the pipeline's noise schedule, which *is*
      the pipeline's own scheduler on SD v1.4; ``"pipeline"``: a copy of whatever the pipeline has.
    * Not in the spec, chosen here [inf]: the standardiser uses the population standard deviation (a constant
      dimension is left unscaled, as scikit-learn's ``StandardScaler`` does); the pooled standard deviation over
      layers is torch's default (unbiased) one; ``R`` starts at 0.1 for the warm-up too (``warmup_radius``); the
      warm-up uses the same loss; the training batches are shuffled with a generator seeded by ``seed``.
    * Toy values (:meth:`SETConfig.toy`) differ in the layers, the sampler and the weight decay; see there.

What the toy shows (measured while writing this module; ``tests/test_set.py``)
    The detector flags a known anomaly (one read layer responding three times as strongly to sharpening) and the
    features separate by scale, step and layer as specified. It does **not** separate EvilEdit's triggered prompts
    from clean ones on the toy (AUROC 0.42-0.63 over detector seeds and training sets; a supervised linear probe
    on the same features reaches only 0.52): EvilEdit's projection alignment gives the trigger the keys and values
    of a clean target prompt, which is exactly what SET measures. The toy text-encoder backdoor (Rickrolling) fared
    no better (0.43-0.60), and neither did gibberish prompts (about 0.5): the clean toy captions already spread
    the features widely. The test of the EvilEdit claim is a strict ``xfail`` stating this.

Cost: 6 runs x ``n_steps`` UNet calls on ``2B`` rows per batch of ``B`` prompts (30 calls; on SD v1.4 at 512 px in
fp16 about as much as 3 images of 50 steps). On the CPU each batch is padded to a multiple of
:func:`erasure_lib.sampling.row_block` prompts (copies of the last one), for the same reason as in
:mod:`erasure_lib.sampling`. The detector is one per attacked model: extract the training features through the
backdoored pipeline itself (``with erasure_lib.backdoors.applied(pipe, bd): det = fit(pipe, clean)``).
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._io import read_safetensors, write_safetensors
from ..sampling import _padded, initial_latents, row_block
from .attention import attention_layer_info, attention_layers, check_layers, probe_attention

FORMAT = "erasure_lib.set_detector/1"
SCHEDULERS = ("pndm", "pipeline")


@dataclass(frozen=True)
class SETConfig:
    """SET hyper-parameters. Defaults: the official code's (spec set.md sections 1-4) unless marked *toy*; use
    :meth:`sd14` for them by name and :meth:`toy` for the toy profile.

    Which layers are read (and scaled): ``layers`` (attention module names) when given; otherwise the
    cross-attention layers of the down and up blocks whose queries are at ``sample_size / read_downsample`` (the mid
    block is never read). The code reads query length 256, i.e. 16x16 on SD v1.4 at 512 px (``sample_size`` 64):
    ``read_downsample=4`` selects ``down_blocks.2.attentions.{0,1}`` and ``up_blocks.1.attentions.{0,1,2}``
    (``attn2``), L = 5."""

    # probe (spec 2, 3)
    scales: tuple[float, ...] = (0.2, 0.3, 7.0, 10.0, 20.0)  # lambda, S = 5
    n_steps: int = 5                       # T: the first 5 denoising steps
    layers: tuple[str, ...] = ()           # explicit read layers; () = the read_downsample selector below
    read_downsample: int = 4               # read the down/up cross-attention at sample_size / 4 (SD: 16x16, L = 5)
    scale_self_attention: bool = True      # code parity; the paper: cross-attention only (False)
    reset_scheduler_between_runs: bool = False  # code parity (PNDM history carries over); True: independent runs
    scheduler: str = "pndm"                # "pndm" (SD v1.4's sampler) or "pipeline" (a copy of the pipeline's)
    steps: int = 50                        # the schedule the first n_steps are taken from (SD: 50)
    guidance: float = 7.5                  # CFG scale (SD: 7.5)
    seed: int = 42                         # base seed of z_T (the code's 42)
    batch_size: int = 20                   # prompts per feature batch (ptp_utils DEFAULT_BATCH_SIZE 20)
    reuse_seed_per_batch: bool = True      # code parity: seed + index within batch; False: seed + global index
    # one-class model (spec 4)
    nu: float = 0.05
    embed_dim: int = 16                    # train.py's override of the default 32
    hidden_dim: int = 64
    warmup_epochs: int = 5
    epochs: int = 100
    lr: float = 1e-3
    min_lr: float = 1e-5                   # end of the cosine decay
    weight_decay: float = 1e-4             # encoder only; none on R
    train_batch_size: int = 256
    trim_fraction: float = 0.01            # distances dropped when re-estimating the centre after warm-up
    radius_reset: float = 0.1              # R after warm-up
    warmup_radius: float = 0.1             # R during warm-up [inf: the spec only says R is *reset* to 0.1; Ruff et
                                           # al.'s soft-boundary code keeps R = 0 during its warm-up]

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.scales:
            raise ValueError("SETConfig.scales is empty: give at least one attention scale")
        bad = [s for s in self.scales if not (math.isfinite(s) and s > 0)]
        if bad:
            raise ValueError(f"SETConfig.scales must be finite and > 0 (a temperature on the logits), got {bad}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"SETConfig.scheduler={self.scheduler!r}; valid: {', '.join(SCHEDULERS)}")
        if min(self.n_steps, self.steps, self.batch_size, self.embed_dim, self.hidden_dim, self.train_batch_size,
               self.read_downsample) < 1:
            raise ValueError("n_steps, steps, batch_size, embed_dim, hidden_dim, train_batch_size and read_downsample "
                             "must be >= 1")
        if self.n_steps > self.steps:
            raise ValueError(f"n_steps ({self.n_steps}) exceeds the schedule's steps ({self.steps})")
        if min(self.warmup_epochs, self.epochs) < 0:
            raise ValueError("warmup_epochs and epochs must be >= 0")
        if not 0 < self.nu < 1:
            raise ValueError(f"nu must be in (0, 1), got {self.nu}")
        if not 0 <= self.trim_fraction < 1:
            raise ValueError(f"trim_fraction must be in [0, 1), got {self.trim_fraction}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr and self.weight_decay >= 0 and self.radius_reset >= 0
                and self.warmup_radius >= 0):
            raise ValueError("need lr > 0, 0 <= min_lr <= lr, weight_decay >= 0, radius_reset >= 0, warmup_radius >= 0")

    @classmethod
    def sd14(cls, **overrides) -> "SETConfig":
        """The code's values for SD v1.4: 50-step PNDM, CFG 7.5, the 5 cross-attention layers of query length 256
        (16x16 at 512 px), S = 5 scales x T = 5 steps x L = 5 layers = 125 features, every code-parity flag on."""
        return cls(**overrides)

    @classmethod
    def toy(cls, **overrides) -> "SETConfig":
        """*toy* values; the rest is the code's.

        * Layers: ``read_downsample=2``, the 4x4 cross-attention of ``down_blocks.1.attentions.0`` and
          ``up_blocks.0.attentions.{0,1}`` (``attn2``), L = 3, 75 features. The toy UNet has cross-attention at
          8x8 and 4x4 only; SD's read resolution, 16x16, is the coarsest resolution of SD's down/up
          cross-attention (64, 32, 16; the 8x8 mid block is not read), and 4x4 is the toy's coarsest (its mid
          block, also at 4x4, is likewise not read). SD's rule taken literally (``sample_size / 4`` = 2x2) would
          select nothing on the toy. L is 3 and not 5 because the toy has one transformer per block
          (``layers_per_block`` 1) where SD has two.
        * Sampler: 20 steps at CFG 5, the toy profile's (:data:`erasure_lib.profiles.PROFILES`); still PNDM (SD v1.4's
          sampler, on the toy's own noise schedule), so the code's carried-over multistep history means the same
          thing on both. The probe reads the first 5 steps, a quarter of the toy's schedule (a tenth of SD's).
        * ``batch_size=64``: the toy profile's; with ``reuse_seed_per_batch`` the seeds cycle over 64 values.
        * ``weight_decay=0``. With the code's 1e-4 the toy detector degenerates, measured on toy features of 96
          clean prompts (one Adam step per epoch at batch 256): the initial embeddings all lie within ``R = 0.1`` of
          ``c``, so the hinge term never fires and weight decay is the encoder's only gradient; Adam turns it into
          steps of about ``lr`` toward zero, and after 100 epochs every input, anomalous or not, maps near the
          origin (embedding spread 4e-4). Clean test prompts then score *higher* than synthetic anomalies (one
          layer's offsets at lambda >= 7 tripled): AUROC 0.07 and 0.13 (seeds 0, 1). Without weight decay: 0.97 and
          1.0. Whether SD-sized training sets avoid this with the code's value is not known (the code's training
          set size is not)."""
        from ..profiles import get_profile
        toy = get_profile("toy")
        return cls(**{**dict(read_downsample=2, steps=toy.steps, guidance=toy.guidance, batch_size=toy.batch_size,
                             weight_decay=0.0), **overrides})

    @property
    def n_scales(self) -> int:
        return len(self.scales)


# --- the probe ----------------------------------------------------------------------------------------------

def read_layers(pipe, config: SETConfig) -> list[str]:
    """The attention layers ``config`` reads (and scales) on ``pipe``'s UNet, in feature order; a ValueError names
    the valid layers when an explicit name is unknown, or the cross-attention resolutions when the selector finds
    none."""
    unet = pipe.unet
    if config.layers:
        return check_layers(unet, config.layers)
    size = unet.config.sample_size
    side = (size[0] if isinstance(size, (tuple, list)) else size) // config.read_downsample
    names = attention_layers(unet, "cross", resolution=side, blocks=("down", "up"))
    if not names:
        have = sorted({layer.resolution[0] for layer in attention_layer_info(unet)
                       if layer.kind == "cross" and layer.block != "mid"})
        raise ValueError(f"no down/up cross-attention at {side}x{side} (sample_size {size} / read_downsample "
                         f"{config.read_downsample}); this UNet has down/up cross-attention at sides {have}")
    return names


def _scheduler(pipe, config: SETConfig):
    """A scheduler of ``pipe``'s noise schedule, not the pipeline's own object (SET's runs must not disturb it)."""
    if config.scheduler == "pipeline":
        return copy.deepcopy(pipe.scheduler)
    from diffusers import PNDMScheduler
    if isinstance(pipe.scheduler, PNDMScheduler):
        return copy.deepcopy(pipe.scheduler)
    # SD v1.4's scheduler_config.json: PLMS without the Runge-Kutta warm-up (PNDM's own default runs PRK steps)
    return PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=True)


def _seeds(n: int, config: SETConfig) -> list[int]:
    if config.reuse_seed_per_batch:
        return [config.seed + i % config.batch_size for i in range(n)]
    return [config.seed + i for i in range(n)]


@torch.no_grad()
def features(pipe, prompts: Sequence[str], seeds: Sequence[int] | None = None, config: SETConfig | None = None,
             progress: bool = True) -> np.ndarray:
    """SET's response offsets of each prompt: float32 ``(N, S * T * L)`` ordered (scale, step, layer), i.e. column
    ``(s * T + k) * L + l`` is scale ``s``, step ``k``, read layer ``l`` (:func:`read_layers` order).

    ``seeds``: the seed of each prompt's ``z_T`` (default: ``config.seed`` plus the index within its batch, or the
    global index; see ``SETConfig.reuse_seed_per_batch``). The pipeline's modules are used as they are (apply a
    backdoor first); its scheduler is not touched."""
    config = SETConfig.toy() if config is None else config
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts: SET needs at least one prompt")
    if any(not isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be strings")
    seeds = _seeds(len(prompts), config) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    layers = read_layers(pipe, config)
    scaled_self = [n for n in attention_layers(pipe.unet, "self") if n not in layers] \
        if config.scale_self_attention else []
    template = _scheduler(pipe, config)
    if not config.reset_scheduler_between_runs and config.n_steps < 2 and hasattr(template, "ets"):
        # PNDM's second call redoes its first step from t + 1000/steps: carried into a run's step 0, that is past T
        raise ValueError("with the PNDM history carried over (reset_scheduler_between_runs=False), n_steps must be "
                         ">= 2")
    starts = range(0, len(prompts), config.batch_size)
    out = []
    with probe_attention(pipe.unet, layers + scaled_self, record_output=layers, cond_only=True) as rec:
        for start in tqdm(starts, desc="SET features", disable=not progress or len(starts) < 2):
            sl = slice(start, start + config.batch_size)
            out.append(_offsets(pipe, prompts[sl], seeds[sl], layers, template, rec, config))
    x = np.concatenate(out)
    if not np.isfinite(x).all():
        raise ValueError(f"non-finite SET features in {int((~np.isfinite(x).any(1)).sum())} prompt(s): the attention "
                         "output overflowed (an fp16 model at a large scale?); run the UNet in float32")
    return x


def _offsets(pipe, prompts, seeds, layers, template, rec, config: SETConfig) -> np.ndarray:
    """The ``(n, S * T * L)`` offsets of one batch (see :func:`features`)."""
    n = len(prompts)
    rows = _padded(n, row_block(pipe.device))
    # padding the prompts, not the UNet call: [uncond; cond] then stays exactly two halves for cond_only
    prompts = prompts + [prompts[-1]] * (rows - n)
    seeds = seeds + [seeds[-1]] * (rows - n)
    cond, uncond = pipe.encode_prompt(prompts, pipe.device, 1, True)
    states = torch.cat([uncond, cond])
    z_T = initial_latents(pipe, seeds)
    S, T, L = config.n_scales, config.n_steps, len(layers)

    def fresh():
        scheduler = copy.deepcopy(template)
        scheduler.set_timesteps(config.steps, device=pipe.device)  # resets PNDM's history (ets, counter)
        return scheduler

    def run(scheduler, on_step):
        z = z_T
        for k, t in enumerate(scheduler.timesteps[:T]):
            inp = scheduler.scale_model_input(torch.cat([z, z]), t)
            eps_u, eps_c = pipe.unet(inp, t, encoder_hidden_states=states).sample.chunk(2)
            on_step(k, [rec.outputs[name][-1] for name in layers])
            rec.clear()
            z = scheduler.step(eps_u + config.guidance * (eps_c - eps_u), t, z).prev_sample

    base = []
    rec.set_scale(1.0)
    scheduler = fresh()
    run(scheduler, lambda k, pv: base.append(pv))
    offsets = torch.empty(rows, S, T, L, dtype=torch.float32, device=pipe.device)
    for s, lam in enumerate(config.scales):
        if config.reset_scheduler_between_runs:
            scheduler = fresh()
        rec.set_scale(lam)  # every probe: the read layers and, with scale_self_attention, the self-attention layers

        def record(k, pv, s=s):
            for l, (now, ref) in enumerate(zip(pv, base[k])):
                offsets[:, s, k, l] = (now.float() - ref.float()).pow(2).mean(dim=(1, 2, 3))
        run(scheduler, record)
    rec.set_scale(1.0)
    return offsets[:n].reshape(n, S * T * L).cpu().numpy()


# --- the one-class model ------------------------------------------------------------------------------------

class DeepSetsEncoder(nn.Module):
    """``f(x)``: ``(N, S*T*L)`` offsets in (scale, step, layer) order -> ``(N, embed_dim)``; DeepSets over layers
    (module docstring)."""

    def __init__(self, token_dim: int, n_layers: int, hidden_dim: int = 64, embed_dim: int = 16):
        super().__init__()
        self.token_dim, self.n_layers = token_dim, n_layers
        self.phi = nn.Sequential(nn.Linear(token_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU())
        # no bias at the end: a bias lets Deep-SVDD map everything onto c (Ruff et al. 2018, prop. 2)
        self.rho = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, embed_dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, S*T*L) with the layer fastest -> (N, L, S*T): one token per layer
        tokens = x.view(len(x), self.token_dim, self.n_layers).transpose(1, 2)
        h = self.phi(tokens)
        spread = h.std(dim=1) if self.n_layers > 1 else torch.zeros_like(h[:, 0])
        return self.rho(torch.cat([h.mean(dim=1), spread], dim=1))


def _distances(encoder: nn.Module, x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    return (encoder(x) - center).pow(2).sum(dim=1)


def _epoch(encoder, radius, optimizer, x, center, config: SETConfig, gen) -> float:
    encoder.train()
    total = 0.0
    for idx in torch.randperm(len(x), generator=gen).split(config.train_batch_size):
        dist = _distances(encoder, x[idx], center)
        r2 = radius.pow(2)
        loss = r2 + torch.clamp(dist - r2, min=0).mean() / config.nu
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(x)


def _optimizer(encoder, radius, config: SETConfig) -> torch.optim.Adam:
    return torch.optim.Adam([{"params": encoder.parameters(), "weight_decay": config.weight_decay},
                             {"params": [radius], "weight_decay": 0.0}], lr=config.lr)


def _train(x: torch.Tensor, n_layers: int, config: SETConfig, seed: int):
    """Soft-boundary Deep-SVDD on standardised features ``x``; returns ``(encoder, center, R^2, history)``."""
    with torch.random.fork_rng(devices=[]):  # the encoder's initialisation, without moving the caller's RNG
        torch.manual_seed(seed)
        encoder = DeepSetsEncoder(x.shape[1] // n_layers, n_layers, config.hidden_dim, config.embed_dim)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        encoder.eval()
        center = encoder(x).mean(dim=0)
    radius = nn.Parameter(torch.tensor(float(config.warmup_radius)))
    optimizer = _optimizer(encoder, radius, config)
    history = []
    for epoch in range(config.warmup_epochs):
        history.append({"phase": "warmup", "epoch": epoch, "loss": _epoch(encoder, radius, optimizer, x, center,
                                                                          config, gen), "r2": radius.item() ** 2})
    with torch.no_grad():
        encoder.eval()
        z = encoder(x)
        dist = (z - center).pow(2).sum(dim=1)
        keep = len(x) - int(math.floor(config.trim_fraction * len(x)))  # drop the most distant 1%
        center = z[dist.argsort()[:max(1, keep)]].mean(dim=0)
    radius = nn.Parameter(torch.tensor(float(config.radius_reset)))
    optimizer = _optimizer(encoder, radius, config)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs), eta_min=config.min_lr)
    for epoch in range(config.epochs):
        loss = _epoch(encoder, radius, optimizer, x, center, config, gen)
        history.append({"phase": "train", "epoch": epoch, "loss": loss, "r2": radius.item() ** 2,
                        "lr": optimizer.param_groups[0]["lr"]})
        cosine.step()
    encoder.eval()
    return encoder, center.detach(), float(radius.detach()) ** 2, history


class SETDetector:
    """A fitted SET detector: the standardiser, the encoder, the centre ``c`` and the threshold ``tau`` of one
    (possibly backdoored) model. Scores are ``|f(x) - c|^2`` (higher = more likely to carry a trigger); a prompt is
    flagged when its score exceeds :attr:`threshold`, the (1 - nu)-quantile of the clean training scores."""

    def __init__(self, config: SETConfig, layers: Sequence[str], encoder: DeepSetsEncoder, mean: np.ndarray,
                 std: np.ndarray, center: torch.Tensor, radius_squared: float, threshold: float, quantile_99: float,
                 seed: int = 0, base_model: str | None = None, history: list | None = None, n_train: int = 0):
        self.config = config
        self.layers = list(layers)
        self.encoder = encoder.eval()
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.center = center.detach().float().cpu()
        self.radius_squared = float(radius_squared)  # learned R^2 (stored; detect.py thresholds at the quantile)
        self.threshold = float(threshold)
        self.quantile_99 = float(quantile_99)
        self.seed = int(seed)
        self.base_model = base_model
        self.history = list(history or [])
        self.n_train = int(n_train)
        width = config.n_scales * config.n_steps * len(self.layers)
        if self.mean.shape != (width,) or self.std.shape != (width,):
            raise ValueError(f"the standardiser has {self.mean.shape[0]} dimensions but the config and layers give "
                             f"{config.n_scales} scales x {config.n_steps} steps x {len(self.layers)} layers = {width}")
        if encoder.token_dim * encoder.n_layers != width:
            raise ValueError(f"the encoder reads {encoder.token_dim} x {encoder.n_layers} features, not {width}")

    @property
    def n_features(self) -> int:
        return self.mean.shape[0]

    @property
    def quantiles(self) -> dict[str, float]:
        return {f"{1 - self.config.nu:g}": self.threshold, "0.99": self.quantile_99}

    def __repr__(self):
        return (f"SETDetector({len(self.layers)} layers, {self.n_features} features, threshold={self.threshold:.4g}, "
                f"trained on {self.n_train} prompts)")

    def features(self, pipe, prompts: Sequence[str], seeds: Sequence[int] | None = None,
                 progress: bool = True) -> np.ndarray:
        """:func:`features` with this detector's config and layers."""
        config = replace(self.config, layers=tuple(self.layers))
        return features(pipe, prompts, seeds, config, progress)

    @torch.no_grad()
    def score_features(self, x) -> np.ndarray:
        """Scores ``|f(x) - c|^2`` of precomputed features ``x (N, n_features)``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"features of shape {x.shape}, expected (N, {self.n_features}) ({self.config.n_scales} "
                             f"scales x {self.config.n_steps} steps x {len(self.layers)} layers)")
        if not np.isfinite(x).all():
            raise ValueError("non-finite values in the features")
        z = torch.from_numpy((x - self.mean) / self.std).float()
        return _distances(self.encoder, z, self.center).double().numpy()

    def score(self, pipe, prompts: Sequence[str], seeds: Sequence[int] | None = None,
              progress: bool = True) -> np.ndarray:
        """SET scores of ``prompts`` through ``pipe`` (the model the detector was fitted on)."""
        return self.score_features(self.features(pipe, prompts, seeds, progress))

    def detect(self, pipe, prompts: Sequence[str], seeds: Sequence[int] | None = None,
               progress: bool = True) -> np.ndarray:
        """``score > threshold`` for each prompt: True = flagged as carrying a trigger."""
        return self.score(pipe, prompts, seeds, progress) > self.threshold

    def save(self, path) -> Path:
        """Write the detector as safetensors (weights, standardiser, ``c``, ``R^2``, quantiles) with its config,
        layers, seed and base model in the header, atomically."""
        tensors = {f"encoder.{k}": v.detach().cpu().contiguous().clone() for k, v in self.encoder.state_dict().items()}
        tensors.update(mean=torch.from_numpy(self.mean.copy()), std=torch.from_numpy(self.std.copy()),
                       center=self.center.clone(),
                       thresholds=torch.tensor([self.threshold, self.quantile_99, self.radius_squared],
                                               dtype=torch.float64))
        meta = {"format": FORMAT, "config": json.dumps(asdict(self.config)), "layers": json.dumps(self.layers),
                "seed": str(self.seed), "base_model": self.base_model or "", "n_train": str(self.n_train),
                "history": json.dumps(self.history),
                "source": "Li et al. 2026, arXiv 2604.12446 (SET); erasure_lib.detect.set"}
        return write_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, path) -> "SETDetector":
        """A detector written by :meth:`save`."""
        tensors, meta = read_safetensors(path, "SET detector", FORMAT)
        known = {f.name for f in fields(SETConfig)}
        config = SETConfig(**{k: v for k, v in json.loads(meta["config"]).items() if k in known})
        layers = json.loads(meta["layers"])
        state = {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
        token_dim = state["phi.0.weight"].shape[1]
        width = tensors["mean"].shape[0]
        if width % token_dim or width // token_dim != len(layers):
            raise ValueError(f"{path}: {width} standardised features do not match the encoder's tokens of "
                             f"{token_dim} over {len(layers)} layers")
        encoder = DeepSetsEncoder(token_dim, len(layers), hidden_dim=state["phi.0.weight"].shape[0],
                                  embed_dim=state["rho.2.weight"].shape[0])
        encoder.load_state_dict(state)
        tau, q99, r2 = tensors["thresholds"].tolist()
        return cls(config, layers, encoder, tensors["mean"].numpy(), tensors["std"].numpy(), tensors["center"], r2,
                   tau, q99, seed=int(meta.get("seed", 0)), base_model=meta.get("base_model") or None,
                   history=json.loads(meta.get("history", "[]")), n_train=int(meta.get("n_train", 0)))


def fit_features(x, config: SETConfig | None = None, layers: Sequence[str] | None = None, seed: int = 0,
                 base_model: str | None = None) -> SETDetector:
    """Train the one-class model on clean features ``x (N, S*T*L)`` (from :func:`features` with ``config``);
    ``layers``: the read layers' names (default: ``config.layers``; only their number matters here)."""
    config = SETConfig.toy() if config is None else config
    layers = list(config.layers if layers is None else layers)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"need clean features of shape (N >= 1, D), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("non-finite values in the clean features")
    width = config.n_scales * config.n_steps * len(layers)
    if not layers or x.shape[1] != width:
        raise ValueError(f"features have {x.shape[1]} columns; {config.n_scales} scales x {config.n_steps} steps x "
                         f"{len(layers)} layers = {width}")
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant dimension carries no information: leave it at 0
    z = torch.from_numpy((x - mean) / std).float()
    encoder, center, r2, history = _train(z, len(layers), config, seed)
    with torch.no_grad():
        train_scores = _distances(encoder, z, center).double().numpy()
    tau, q99 = np.quantile(train_scores, [1 - config.nu, 0.99])
    return SETDetector(config, layers, encoder, mean, std, center, r2, float(tau), float(q99), seed=seed,
                       base_model=base_model, history=history, n_train=len(x))


def fit(pipe, clean_prompts: Sequence[str], config: SETConfig | None = None, seed: int = 0,
        seeds: Sequence[int] | None = None, progress: bool = True) -> SETDetector:
    """Fit SET on ``clean_prompts`` through ``pipe`` (the model to protect, backdoor applied): extract their
    features (:func:`features`, latent seeds ``seeds`` or the config's), then train the Deep-SVDD with ``seed``."""
    from ..methods.cache import model_identity
    config = SETConfig.toy() if config is None else config
    clean_prompts = list(clean_prompts)
    if not clean_prompts:
        raise ValueError("no clean prompts: SET is trained on clean prompts of the protected model")
    layers = read_layers(pipe, config)
    x = features(pipe, clean_prompts, seeds, config, progress)
    return fit_features(x, replace(config, layers=tuple(layers)), layers, seed, base_model=model_identity(pipe))


__all__ = ["DeepSetsEncoder", "SETConfig", "SETDetector", "features", "fit", "fit_features", "read_layers"]
