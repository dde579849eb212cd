"""ESD: Erased Stable Diffusion, fine-tuning a copy of the UNet against negative guidance on the concept.

Paper: R. Gandikota, J. Materzyńska, J. Fiotto-Kaufman, D. Bau, "Erasing Concepts from Diffusion Models",
ICCV 2023, arXiv 2303.07345. Code: ``rohitgandikota/erasing`` (legacy ``train-scripts/train-esd.py`` at ``a2189e9``,
diffusers ``esd_sd.py`` at ``25613d2``). Spec: ``specs/esd.md``. Co-Erasing's stage 1 is this with ESD-u.

Algorithm (paper eq. 5 and the legacy code; one iteration, batch size 1)::

    draw a seed and a DDIM index r ~ U{0..ddim_steps-1}
    x_t   = r DDIM steps from x_T with CFG ``start_guidance`` on the concept prompt c   (partial sampling)
    e_c   = eps_frozen(x_t, t, c);  e_0 = eps_frozen(x_t, t, "")                        (no grad)
    target = e_0 - eta * (e_c - e_0)                                                   (negative guidance)
    loss  = MSE(eps_trained(x_t, t, c), target);  one Adam step on the chosen parameter set

so that the trained copy, when asked for c, predicts what the frozen model predicts when guided *away* from c.

How x_t is produced here (and why it is the same distribution, for far less compute)
    The reference samples one partial trajectory per iteration: ``r`` UNet-pairs for one training step, 25
    pairs on average. Here :func:`trajectory_pool` runs ``pool_size`` full 50-step trajectories *up front*, in
    one batched :func:`~erasure_lib.sampling.denoise` pass that records every latent and both noise
    predictions of every step. An iteration then draws a (trajectory, index) pair from the pool: the latent
    entering step ``r`` is exactly what ``latents_at(pipe, [c], [seed], r)`` returns (DDIM with eta = 0 is
    deterministic, and stopping early does not change the steps before), and the recorded conditional and
    unconditional predictions of that step *are* ``e_c`` and ``e_0`` of the frozen model at ``(x_t, t)``, so
    they need no further UNet calls. Per iteration only the trained copy runs (forward + backward). Drawing
    the seed from a pool of ``pool_size`` seeds instead of a fresh seed per iteration is the one difference;
    with 32 seeds x 50 indices = 1,600 distinct pairs for 1,000 iterations it is immaterial. The pool is
    sampled with the frozen model, as ``esd_sd.py`` does; the legacy code samples with the model being trained
    (``sample_from="trained"`` regenerates the pool from the trained copy every ``refresh_every`` iterations).

Timestep (``ESDConfig.timestep``)
    ``"grid"`` (default, ``esd_sd.py``): the UNet is evaluated at the DDIM timestep ``timesteps[r]`` at which
    ``x_t`` actually sits. ``"bin"`` (legacy): a DDPM timestep drawn uniformly from the 1000/ddim_steps-wide bin
    of index ``r``; the frozen predictions are then computed per iteration (2 more UNet calls).

Parameter sets (``ESDConfig.parameter_set``, diffusers parameter names; spec esd.md 2.2)
    * ``esd-x``: every parameter of every cross-attention ``attn2`` (``to_q``, ``to_k``, ``to_v``, ``to_out.0``
      weight and bias): the legacy ``xattn`` and the diffusers ``esd-x`` select the same tensors. For styles.
    * ``esd-x-strict``: only ``attn2.to_k`` and ``attn2.to_v`` (diffusers ``esd-x-strict``).
    * ``esd-u`` (= ``esd-u-ldm``): the legacy ``noxattn`` mapped to diffusers names: everything except ``attn2``,
      ``time_embedding.*`` (ldm ``time_embed``) and ``conv_norm_out.*`` / ``conv_out.*`` (ldm ``out.``); norms,
      ``resnets.*.time_emb_proj``, ``conv_in``, ``attn1``, ``ff``, ``proj_in/out`` are trained. For nudity and
      objects (the paper's choice).
    * ``esd-u-diffusers``: ``esd_sd.py``'s rule: every ``Linear``/``Conv2d`` not under ``attn2`` (no norms, but
      ``time_embedding`` and ``conv_out`` included).
    * ``full``: every parameter (legacy ``full``).
    A rule that selects nothing raises.

Negative-guidance convention (``ESDConfig.eta_form``; spec esd.md 1)
    ``"uncond_base"`` (paper, legacy, Co-Erasing): ``target = e_0 - eta (e_c - e_0)``, default eta = 1.
    ``"cond_base"`` (``esd_sd.py``): ``target = e_c - eta (e_c - e_0)``, whose default eta = 2 is the same target.

Memory (issue 10: ESD-u and Co-Erasing on a 16 GB T4; the computed budget is :mod:`erasure_lib.memory`)
    There is one UNet, ``pipe.unet``; no copy of it is made. The trained tensors are swapped *into* it as fp32
    master copies (:class:`TrainedTensors`), and the frozen model is the same module with its own tensors
    swapped back in under ``no_grad``: ``frozen weights + fp32 copies of the trained tensors`` instead of two
    UNets. On a reduced-precision base (the sd14 profile's fp16 on CUDA) the trained forward runs under
    ``torch.autocast`` in the base dtype with those fp32 masters (fp16: with a gradient scaler), so Adam never
    sees fp16 weights; an fp32 base (the toy) runs exactly as before, in fp32, without autocast.
    ``gradient_checkpointing`` (on in :meth:`ESDConfig.sd14`, off on the toy) recomputes the UNet blocks'
    activations in the backward pass; ``optimizer="adafactor"`` (factored second moments, no first moment) or
    ``"adam8bit"`` (bitsandbytes) shrink the optimizer states, which are Adam's largest item (2 fp32 per trained
    parameter). Gradients are freed right after each step, so sampling the pool does not hold them, and
    ``sample_batch_size`` bounds the rows of one sampling call (the sd14 preset samples 8 trajectories at a time).

The frozen model is ``pipe.unet`` as it is on entry (so ESD can follow another edit); the pipeline is not
modified (its tensors are swapped during training and restored when ``erase`` returns or raises). The result is
an edit: the trained values of the selected parameters only (fp32).
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..sampling import Trajectory, denoise, encode_prompts, initial_latents, set_steps
from .edits import Edit

PARAMETER_SETS = ("esd-x", "esd-x-strict", "esd-u", "esd-u-ldm", "esd-u-diffusers", "full")
OPTIMIZERS = ("adam", "adafactor", "adam8bit")

# *toy* learning rates per parameter set (Adam, 1000 iterations, batch 1), measured on the toy zoo
# (benchmarks and chapter 00). Cross-attention only (ESD-x): 1e-3, erasing at CFG 5 with other objects >= 0.96.
# Everything but cross-attention (ESD-u): stable up to 3e-5 -- the ESD objective on held-out x_t falls from the
# unedited 0.0131 to 0.0050 (1e-5) and 0.0054 (3e-5), while at 1e-4 it ends *above* it (0.0173), other objects drop
# at CFG 1 (0.78) and the nude rate at CFG 5 stays at 0.97.
_X_LR, _U_LR = 1e-3, 3e-5
TOY_LR = {"esd-x": _X_LR, "esd-x-strict": _X_LR, "esd-u": _U_LR, "esd-u-ldm": _U_LR, "esd-u-diffusers": _U_LR,
          "full": _U_LR}


@dataclass(frozen=True)
class ESDConfig:
    """ESD hyper-parameters. Paper / legacy values (``train-esd.py``, spec esd.md 4) unless marked *toy*.

    ``lr=None`` (the default) takes the parameter set's toy learning rate from :data:`TOY_LR`, measured on the
    toy zoo (1000 iterations, eta 1, batch 1; rates on the held-out prompt sets at the evaluation guidance 5;
    chapter 00, "What the toy world reproduces", and ``results/00_toy_world/calibration*.csv``):

    * ESD-x (``esd-x``, ``esd-x-strict``): ``1e-3`` (SD v1.4: 1e-5). At 1e-5 nothing moves on the toy; at 1e-4 ...
      5e-4 ESD-x erases the training prompt itself but only half of the held-out explicit prompts; 1e-3 takes the
      nude rate 1.0 -> 0.27 (implicit 0.16) with other objects at 0.98, and 3e-3 starts to cost objects and styles.
    * ESD-u (``esd-u``, ``esd-u-ldm``, ``esd-u-diffusers``, ``full``): ``TOY_LR["esd-u"]``, the largest rate of the
      measured stable range (see :data:`TOY_LR`). Above it ESD-u damages the model before it erases anything at
      CFG 5; within it ESD-u erases at CFG 1 but not at CFG 3 or 5, at any rate or length tried: it moves the
      unconditional prediction as much as the conditional one, so classifier-free guidance restores the concept
      (:mod:`erasure_lib.calibration`). This is a property of the toy zoo, not of these values.

    ``parameter_set`` defaults to ``"esd-x"`` on the toy for that reason; the paper uses ESD-u for nudity and
    objects: pass ``parameter_set="esd-u"`` (or use :meth:`sd14`) for the paper's choice.
    Use :meth:`sd14` for the paper's SD v1.4 values and :meth:`fast` for ``esd_sd.py``'s."""

    parameter_set: str = "esd-x"   # *toy*: see above; the paper uses esd-u for nudity/objects, esd-x for styles
    iterations: int = 1000         # train-esd.py; esd_sd.py uses 200
    lr: float | None = None        # *toy*: None = TOY_LR[parameter_set], see above (SD v1.4: 1e-5, train-esd.py)
    negative_guidance: float = 1.0  # eta (paper form, train-esd.py --negative_guidance 1)
    eta_form: str = "uncond_base"  # "uncond_base" (paper/legacy) or "cond_base" (esd_sd.py, where eta 2 == 1 here)
    ddim_steps: int = 50           # DDIM grid of the partial sampling (train-esd.py --ddim_steps 50)
    start_guidance: float = 3.0    # CFG while sampling x_t (train-esd.py --start_guidance 3)
    batch_size: int = 1            # train-esd.py and esd_sd.py: 1
    timestep: str = "grid"         # "grid" (esd_sd.py) or "bin" (train-esd.py); see the module docstring
    pool_size: int = 32            # *this library*: trajectories sampled up front (see the module docstring)
    sample_from: str = "frozen"    # "frozen" (esd_sd.py) or "trained" (train-esd.py: the model being trained)
    refresh_every: int = 100       # with sample_from="trained": regenerate the pool every this many iterations
    seed: int = 0
    # memory (module docstring, "Memory"); none changes the toy numbers at its default
    gradient_checkpointing: bool = False  # recompute the UNet blocks in the backward (sd14: on; toy: off, it is small)
    optimizer: str = "adam"        # "adam" (the reference), "adafactor" (fixed lr) or "adam8bit" (bitsandbytes)
    sample_batch_size: int = 64    # trajectories per batched sampling call of the pool (x2 UNet rows with CFG; sd14: 8)

    def __post_init__(self):
        checks = {
            "parameter_set": (self.parameter_set in PARAMETER_SETS, PARAMETER_SETS),
            "eta_form": (self.eta_form in ("uncond_base", "cond_base"), ("uncond_base", "cond_base")),
            "timestep": (self.timestep in ("grid", "bin"), ("grid", "bin")),
            "sample_from": (self.sample_from in ("frozen", "trained"), ("frozen", "trained")),
            "optimizer": (self.optimizer in OPTIMIZERS, OPTIMIZERS),
        }
        for field, (ok, valid) in checks.items():
            if not ok:
                raise ValueError(f"ESDConfig.{field}={getattr(self, field)!r}; valid: {', '.join(valid)}")
        if min(self.iterations, self.ddim_steps, self.batch_size, self.pool_size, self.refresh_every,
               self.sample_batch_size) < 1:
            raise ValueError("iterations, ddim_steps, batch_size, pool_size, refresh_every and sample_batch_size "
                             "must be >= 1")
        if self.lr is None:  # frozen dataclass: resolve the parameter set's toy default once, here
            object.__setattr__(self, "lr", TOY_LR[self.parameter_set])
        if not self.lr > 0:
            raise ValueError("lr must be > 0")

    @classmethod
    def sd14(cls, parameter_set: str = "esd-u", **overrides) -> "ESDConfig":
        """The paper-faithful preset for SD v1.4 (spec esd.md 9.4): 1000 iterations, Adam lr 1e-5, eta 1, batch 1,
        50-step DDIM with CFG 3, x_t from the model being trained at a timestep drawn in the index's bin; with
        gradient checkpointing and the pool sampled 8 trajectories at a time (memory only: 64 at once, 128 UNet
        rows with CFG, would need 4 GB more than a training iteration). For ESD-u on a 16 GB T4 pass
        ``optimizer="adafactor"`` too (:func:`erasure_lib.memory.memory_table`)."""
        return cls(**{**dict(parameter_set=parameter_set, lr=1e-5, timestep="bin", sample_from="trained",
                             gradient_checkpointing=True, sample_batch_size=8), **overrides})

    @classmethod
    def fast(cls, parameter_set: str = "esd-x", **overrides) -> "ESDConfig":
        """``esd_sd.py``'s defaults: 200 iterations, lr 5e-5, eta 2 in its own (cond_base) form."""
        return cls(**{**dict(parameter_set=parameter_set, iterations=200, lr=5e-5, negative_guidance=2.0,
                             eta_form="cond_base"), **overrides})


def erase(pipe, concept: str | Sequence[str], params: ESDConfig = ESDConfig(), progress: bool = True,
          log: list | None = None) -> Edit:
    """Erase ``concept`` (a prompt, or several: each iteration uses one, round-robin over the pool) with ESD;
    returns the edit: the trained values of the parameters of ``params.parameter_set``.

    ``log``, if given a list, receives one ``{"iteration", "loss", "t", "index"}`` dict per iteration (``t``: the
    UNet timesteps of the batch, ``index``: their DDIM indices ``r``)."""
    concepts = [concept] if isinstance(concept, str) else list(concept)
    if not concepts or any(not isinstance(c, str) or not c.strip() for c in concepts):
        raise ValueError("give a non-empty concept prompt (or a list of them)")
    unet = pipe.unet
    names = trainable_parameter_names(unet, params.parameter_set)
    gen = torch.Generator().manual_seed(params.seed)
    device, dtype = pipe.device, unet.dtype  # the base dtype, read before fp32 masters are swapped in

    cond = encode_prompts(pipe, concepts).float()   # (k, 77, d)
    null = encode_prompts(pipe, [""]).float()       # (1, 77, d)
    timesteps = set_steps(pipe, params.ddim_steps).cpu()
    width = pipe.scheduler.config.num_train_timesteps // params.ddim_steps
    recorded = params.timestep == "grid" and params.sample_from == "frozen"  # e_c, e_0 come from the pool

    pool = prompt_ids = None
    bar = tqdm(range(params.iterations), desc=f"ESD {params.parameter_set} {'; '.join(concepts)}"[:60],
               disable=not progress)
    with TrainedTensors(unet, names) as trained, gradient_checkpointing(unet, params.gradient_checkpointing):
        optimizer = make_optimizer(params.optimizer, trained.masters, params.lr)
        scaler = grad_scaler(device, dtype)
        for it in bar:
            if pool is None or (params.sample_from == "trained" and it % params.refresh_every == 0):
                with trained.sampling() if params.sample_from == "trained" else trained.frozen():
                    pool, prompt_ids = _pool(pipe, concepts, params, gen)
                if recorded and pool.noise_uncond is not None:
                    trained.offload_originals()  # the frozen model is not called again: its tensors wait on the CPU
            i = torch.randint(len(prompt_ids), (params.batch_size,), generator=gen)
            r = torch.randint(params.ddim_steps, (params.batch_size,), generator=gen)
            x = pool.latents[i, r].to(device)
            c = cond[prompt_ids[i]]
            if recorded and pool.noise_uncond is not None:
                t = timesteps[r]
                e_c, e_0 = pool.noise_cond[i, r], pool.noise_uncond[i, r]  # the frozen model's, recorded at (x, t)
            else:
                lo = pipe.scheduler.config.num_train_timesteps - width * (r + 1)
                t = timesteps[r] if params.timestep == "grid" else lo + torch.randint(width, (len(r),), generator=gen)
                with torch.no_grad(), trained.frozen():
                    e_c, e_0 = unet(torch.cat([x, x]).to(dtype), torch.cat([t, t]).to(device),
                                    encoder_hidden_states=torch.cat([c, null.expand(len(x), -1, -1)]).to(dtype)
                                    ).sample.chunk(2)
            e_c, e_0 = e_c.to(device=device, dtype=torch.float32), e_0.to(device=device, dtype=torch.float32)
            target = negative_guidance_target(e_c, e_0, params.negative_guidance, params.eta_form)
            unet.train()
            with autocast(device, dtype):
                pred = unet(x, t.to(device), encoder_hidden_states=c).sample
                loss = torch.nn.functional.mse_loss(pred.float(), target)
            value = optimisation_step(optimizer, loss, it, "ESD", scaler)
            if log is not None:
                log.append({"iteration": it, "loss": value, "t": [int(v) for v in t], "index": [int(v) for v in r]})
            if it % 25 == 0 or it == params.iterations - 1:
                bar.set_postfix(loss=f"{value:.4f}")
        return trained.values()


def negative_guidance_target(e_c: torch.Tensor, e_0: torch.Tensor, eta: float, form: str = "uncond_base"
                             ) -> torch.Tensor:
    """ESD's regression target from the frozen model's conditional ``e_c`` and unconditional ``e_0`` predictions:
    ``base - eta * (e_c - e_0)`` with ``base = e_0`` (``form="uncond_base"``: paper, legacy code) or ``base = e_c``
    (``"cond_base"``: ``esd_sd.py``; its eta 2 is the same target as eta 1 in the paper form)."""
    if form not in ("uncond_base", "cond_base"):
        raise ValueError(f"eta form {form!r}; valid: uncond_base, cond_base")
    base = e_0 if form == "uncond_base" else e_c
    return base - eta * (e_c - e_0)


def adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel where the parameters' device has one (CPU and CUDA do): the same update
    rule, one kernel for all tensors instead of a Python loop over ~250 of them. On the toy UNet this took an
    ESD-u iteration (batch 1, 2 threads) from 39 ms to 30 ms."""
    parameters = list(parameters)
    devices = {p.device.type for p in parameters}
    fused = devices <= {"cpu", "cuda"} and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                                                  for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, fused=fused or None)


def make_optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    """The optimiser ``name`` (:data:`OPTIMIZERS`) over ``parameters`` at the fixed learning rate ``lr``.

    * ``"adam"``: :func:`adam` (the reference's Adam; 2 fp32 states per parameter);
    * ``"adafactor"``: ``transformers.optimization.Adafactor`` with a fixed ``lr`` (no relative step, no
      parameter scaling, no first moment). The second moment is stored factored, as its means over the last
      two dimensions: a matrix keeps a row and a column vector, while a 3x3 conv kernel still keeps 2/3 of a
      full moment. So SD v1.4's ESD-x states shrink from 0.35 GB to 0.45 MB, and ESD-u's, 72% conv, from
      6.5 GB to 1.8 GB;
    * ``"adam8bit"``: ``bitsandbytes.optim.Adam8bit`` (block-quantised states, 2 bytes per parameter; CUDA)."""
    parameters = list(parameters)
    if name == "adam":
        return adam(parameters, lr)
    if name == "adafactor":
        from transformers.optimization import Adafactor
        return Adafactor(parameters, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    if name == "adam8bit":
        try:
            import bitsandbytes
        except ImportError:
            raise ImportError("optimizer='adam8bit' needs the bitsandbytes package (pip install bitsandbytes; "
                              "CUDA only); or use optimizer='adafactor', which needs nothing more") from None
        return bitsandbytes.optim.Adam8bit(parameters, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def grad_scaler(device, dtype) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast (fp16 activation gradients underflow without one); None otherwise."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def autocast(device, dtype):
    """``torch.autocast`` in the base dtype when it is a reduced precision (fp16, bf16); a no-op for fp32, so the
    toy profile's numbers do not depend on it. Without autocast's weight cache: it would hold an fp16 copy of
    every fp32 master until the forward ends (1.5 GB for SD v1.4's ESD-u), also under gradient checkpointing,
    and each UNet weight is used once per forward, so the cache saves no cast."""
    if dtype not in (torch.float16, torch.bfloat16):
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype, cache_enabled=False)


def optimisation_step(optimizer, loss: torch.Tensor, iteration: int, method: str,
                      scaler: torch.amp.GradScaler | None = None, accumulate: bool = False) -> float:
    """One optimiser step on ``loss`` (through ``scaler`` if given; ``optimizer`` may be a list of optimisers over
    disjoint parameters, each stepped on the same backward: TICoE's UNet and HVRL); returns its value, and stops
    with a clear error, before stepping, when it is not finite. The gradients are freed after the step (they are not needed
    until the next backward, and sampling or a frozen-model call in between should not hold them), unless
    ``accumulate``: then they are never zeroed, and each step sees the sum of every gradient so far (TRCE's code)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"{method} loss became {value} at iteration {iteration}: lower the learning rate")
    if accumulate and scaler is not None:
        raise ValueError(f"{method}: gradients cannot accumulate across steps under fp16's gradient scaler (each step "
                         "unscales them in place); train an fp32 base to reproduce never-zeroed gradients")
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    if not accumulate:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        for opt in optimizers:
            opt.step()
    else:
        scaler.scale(loss).backward()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
    if not accumulate:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
    return value


# Bumped whenever a change alters the numbers training produces (not the hyper-parameters, which the metadata
# records anyway): edits cached under an older implementation are then retrained, not reused.
# 2: fused Adam (2026-11-28).
# 3: reduced-precision bases train with autocast and fp32 masters of the trained tensors only, not an fp32 copy of
#    the whole UNet (issue 10); fp32 bases (the toy) give bit-identical edits to 2.
IMPLEMENTATION = 3


def metadata(concept, params: ESDConfig = ESDConfig(), pipe=None) -> dict:
    """What :func:`~erasure_lib.methods.save_edit` should record for an edit made by :func:`erase`; with ``pipe``
    also the base model it is trained on (:func:`~erasure_lib.methods.cache.base_model`), so two base models
    never share a cache key."""
    from .cache import base_model
    concepts = [concept] if isinstance(concept, str) else list(concept)
    return {"method": "esd", "variant": params.parameter_set, "concept": "; ".join(concepts), "concepts": concepts,
            "hyperparameters": asdict(params), "implementation": IMPLEMENTATION,
            "source": "Gandikota et al., ICCV 2023 (arXiv 2303.07345); rohitgandikota/erasing",
            **(base_model(pipe) if pipe is not None else {})}


# --- training inside the frozen UNet -------------------------------------------------------------------------

class TrainedTensors:
    """Train some parameters of ``unet`` *in* it, without a second copy of the UNet.

    On entering, each named parameter is replaced in its module by an fp32 master copy (``masters``, the
    parameters to optimise; the only tensors duplicated), every other parameter is frozen
    (``requires_grad=False``), and the module's own tensors (``originals``) are kept aside, untouched. Inside:

    * the UNet computes the *trained* model (the masters); under ``torch.autocast`` when the base is fp16;
    * :meth:`frozen` swaps the originals back in for a block: the frozen model, the same module;
    * :meth:`sampling` swaps in the masters cast to the base dtype (no copy on an fp32 base): the trained model
      as a plain base-dtype UNet, for the pipeline's sampling code;
    * :meth:`offload_originals` moves the originals to the CPU when the frozen model is not needed any more.

    On leaving (also on an error) the originals, their devices, every ``requires_grad`` flag and the
    train/eval mode are put back: the UNet is bit-for-bit what it was. Swapping replaces entries of
    ``module._parameters`` (no data is copied), so it costs microseconds per call."""

    def __init__(self, unet: torch.nn.Module, names: Sequence[str]):
        self.unet, self.names = unet, list(names)
        modules = dict(unet.named_modules())
        self._slots = [(modules[n.rpartition(".")[0]], n.rpartition(".")[2]) for n in self.names]
        self.originals = [module._parameters[leaf] for module, leaf in self._slots]
        self.masters: list[torch.nn.Parameter] = []
        self._devices = [p.device for p in self.originals]
        self._flags: dict[torch.nn.Parameter, bool] = {}

    def __enter__(self) -> "TrainedTensors":
        self._flags = {p: p.requires_grad for p in self.unet.parameters()}
        self._training = self.unet.training
        self.unet.requires_grad_(False)
        self.masters = [torch.nn.Parameter(p.detach().to(torch.float32, copy=True)) for p in self.originals]
        self._put(self.masters)
        return self

    def __exit__(self, *exc) -> bool:
        self._put(self.originals)
        with torch.no_grad():
            for p, device in zip(self.originals, self._devices, strict=True):
                if p.device != device:
                    p.data = p.data.to(device)
        for p, flag in self._flags.items():
            p.requires_grad_(flag)
        self.unet.train(self._training)
        self.masters = []
        return False

    def _put(self, tensors) -> None:
        for (module, leaf), tensor in zip(self._slots, tensors, strict=True):
            module._parameters[leaf] = tensor

    @contextlib.contextmanager
    def _holding(self, tensors) -> Iterator[None]:
        training = self.unet.training
        self._put(tensors)
        self.unet.eval()
        try:
            yield
        finally:
            self._put(self.masters)
            self.unet.train(training)

    def frozen(self):
        """``with trained.frozen(): ...``: the UNet is the frozen model (its own tensors) inside the block."""
        if any(p.device != d for p, d in zip(self.originals, self._devices, strict=True)):
            raise RuntimeError("the frozen model's tensors were offloaded: offload_originals() came too early")
        return self._holding(self.originals)

    def sampling(self):
        """``with trained.sampling(): ...``: the UNet is the trained model in the base dtype inside the block."""
        return self._holding([torch.nn.Parameter(m.detach().to(p.dtype), requires_grad=False)
                              if m.dtype != p.dtype else m for m, p in zip(self.masters, self.originals, strict=True)])

    @torch.no_grad()
    def offload_originals(self, device="cpu") -> None:
        """Move the frozen model's trained tensors to ``device`` until the UNet is restored (a no-op on the CPU)."""
        for p in self.originals:
            if p.device != torch.device(device):
                p.data = p.data.to(device)

    def values(self) -> Edit:
        """The trained tensors now, as an edit (fp32 CPU copies, in ``names`` order)."""
        return {n: m.detach().to("cpu").clone().contiguous() for n, m in zip(self.names, self.masters, strict=True)}


@contextlib.contextmanager
def gradient_checkpointing(unet, enable: bool) -> Iterator[None]:
    """Gradient checkpointing of ``unet``'s blocks inside the block if ``enable`` (then put back as it was)."""
    before = bool(getattr(unet, "is_gradient_checkpointing", False))
    if enable and not before:
        unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if enable and not before:
            unet.disable_gradient_checkpointing()


# --- parameter sets ------------------------------------------------------------------------------------------

def _under(name: str, part: str) -> bool:
    return f".{part}." in f".{name}."


def trainable_parameter_names(unet, parameter_set: str) -> list[str]:
    """The UNet parameter names a parameter set trains, in ``named_parameters`` order (see the module docstring)."""
    if parameter_set not in PARAMETER_SETS:
        raise ValueError(f"unknown ESD parameter set {parameter_set!r}; valid: {', '.join(PARAMETER_SETS)}")
    names = [n for n, _ in unet.named_parameters()]
    if parameter_set == "esd-x":
        out = [n for n in names if _under(n, "attn2")]
    elif parameter_set == "esd-x-strict":
        out = [n for n in names if _under(n, "attn2") and (_under(n, "to_k") or _under(n, "to_v"))]
    elif parameter_set in ("esd-u", "esd-u-ldm"):
        out = [n for n in names if not _under(n, "attn2")
               and not n.startswith(("time_embedding.", "conv_norm_out.", "conv_out."))]
    elif parameter_set == "esd-u-diffusers":
        out = [f"{m}.{p}" if m else p
               for m, module in unet.named_modules() if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
               and not _under(m, "attn2") for p, _ in module.named_parameters(recurse=False)]
        order = {n: i for i, n in enumerate(names)}
        out = sorted(out, key=order.__getitem__)
    else:  # full
        out = names
    if not out:
        raise ValueError(f"ESD parameter set {parameter_set!r} selects no parameter of this UNet")
    return out


# --- x_t pool ------------------------------------------------------------------------------------------------

def trajectory_pool(pipe, prompts: Sequence[str], seeds: Sequence[int], steps: int = 50, guidance: float = 3.0,
                    unet=None, batch_size: int = 64, stop: int | None = None) -> Trajectory:
    """One ``steps``-step DDIM trajectory per (prompt, seed) with CFG ``guidance``, recorded (batched); with
    ``stop``, only its first ``stop`` steps (``latents[:, :stop + 1]``, the same values: a step never depends on a
    later one), for a training that reads only early latents.

    ``trajectory.latents[k, r]`` equals ``latents_at(pipe, [prompts[k]], [seeds[k]], r, steps, guidance)[0]``,
    and ``trajectory.noise_cond/noise_uncond[k, r]`` are the sampling UNet's predictions at that latent and
    ``timesteps[r]``. ``unet``: sample with this UNet instead of ``pipe.unet`` (the legacy code samples with the
    model being trained; an fp32 ``unet`` of a reduced-precision pipeline is copied in the pipeline's dtype).
    ``batch_size``: trajectories per batched call (on the CPU the result does not depend on it)."""
    original = pipe.unet
    was_training = unet.training if unet is not None else None
    try:
        if unet is not None:  # sample in the pipeline's dtype (the trained copy is fp32)
            pipe.unet = unet.eval() if unet.dtype == original.dtype else copy.deepcopy(unet).to(original.dtype).eval()
        return denoise(pipe, list(prompts), initial_latents(pipe, seeds), steps=steps, guidance=guidance,
                       stop=stop, record=True, batch_size=batch_size)
    finally:
        pipe.unet = original
        if unet is not None and was_training:
            unet.train()


def _pool(pipe, concepts, params: ESDConfig, gen: torch.Generator):
    """``params.pool_size`` recorded trajectories of ``pipe.unet`` as it is (the frozen or the trained model, see
    :class:`TrainedTensors`), prompts round-robin over ``concepts``, seeds from ``gen``."""
    seeds = torch.randint(0, 2**31 - 1, (params.pool_size,), generator=gen).tolist()
    prompt_ids = torch.arange(params.pool_size) % len(concepts)
    traj = trajectory_pool(pipe, [concepts[int(k)] for k in prompt_ids], seeds, params.ddim_steps,
                           params.start_guidance, batch_size=params.sample_batch_size)
    return traj, prompt_ids


__all__ = ["ESDConfig", "IMPLEMENTATION", "OPTIMIZERS", "PARAMETER_SETS", "TOY_LR", "TrainedTensors", "adam",
           "autocast", "erase", "grad_scaler", "gradient_checkpointing", "make_optimizer", "metadata",
           "negative_guidance_target", "optimisation_step", "trainable_parameter_names", "trajectory_pool"]
