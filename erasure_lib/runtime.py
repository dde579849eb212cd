"""How long the sd14 profile runs on a Colab T4 or an A100: *computed*, not measured.

No GPU has been available to this project yet, so a notebook's GPU runtime is computed from two things:

1. **The work, counted.** Every phase of a run is a number of UNet calls of a given width (rows: the batch, doubled
   by classifier-free guidance), plus VAE decodes. :func:`sampling`, :func:`esd`, :func:`co_erasing` and
   :func:`trce` count them from the configs, following the code of :mod:`erasure_lib.sampling` and
   :mod:`erasure_lib.methods`; a test runs the methods on the toy zoo under :class:`UNetCalls` (a forward hook on
   the UNet) and checks that the count matches the real calls one for one.
2. **A published throughput.** The diffusers documentation's PyTorch 2.0 benchmark (``docs/source/en/
   optimization/torch2.0.md`` of huggingface/diffusers, "Benchmark": Stable Diffusion v1.5 text-to-image, fp16,
   PyTorch 2.0 SDPA attention, no ``torch.compile``) gives the denoising loop's iterations per second at batch
   sizes 1, 4 and 16 on a T4 and an A100. SD v1.5 has SD v1.4's UNet; one iteration is one UNet call on
   2 x batch rows (CFG). :data:`THROUGHPUT` turns them into UNet rows per second; a call of another width is
   interpolated between them (log-linear in the rows; below 2 rows the 2-row rate, which flatters batch 1).

On top of the benchmark, three approximations, stated so they can be checked once a GPU measures them:

* a training call (forward with grad, backward) costs :data:`TRAIN_FACTOR` = 3 forward rows (the backward
  computes the activations' and the weights' gradients: about 2 forwards), plus one more forward when gradient
  checkpointing recomputes the blocks (:data:`CHECKPOINT_FACTOR`);
* a VAE decode of one 512x512 image costs its FLOPs over a UNet row's (:func:`decode_rows`, counted by
  ``torch.utils.flop_counter`` on the meta-device models of SD v1.4's configs: about 3.1 UNet rows);
* a call narrower than 2 rows (a batch-1 training step) is priced at the 2-row rate; an A100 is far from
  saturated there (43 rows/s at 2 rows, 93 at 8), so its training phases may take up to about twice as long;
* the text encoder, the IP-Adapter's image encoder, the optimizer step, the judges (NudeNet runs on the CPU),
  CLIP and FID features, the FID bootstrap (cheap at the Colab sizes, :func:`erasure_lib.metrics.fid.
  frechet_distance_low_rank`; at the papers' 3,000 COCO images each resample is a 2048 x 2048 matrix square
  root), model downloads and Python overhead are not counted. The totals are lower bounds of the wall clock.

Only the UNet calls are checked against the real ones (``tests/test_runtime.py``); the decodes are counted per
sampling batch (the pipeline decodes in chunks of 8: the same images) and the evaluation as one stream at the
profile's guidance (rows with their own guidance, as in UnlearnDiffAtk, are sampled in their own batches: a
little more, narrower calls).
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field

import pandas as pd
import torch

# diffusers docs, torch2.0.md "Benchmark", SD - txt2img, "torch 2.0 - no compile" (it/s; the T4 batch-16 entry is
# printed as seconds per iteration, "2.34s"): UNet rows per second = it/s x 2 x batch.
BENCHMARK_ITS = {"T4": {1: 6.9, 4: 1.79, 16: 1 / 2.34}, "A100": {1: 21.66, 4: 11.6, 16: 3.04}}
BENCHMARK_SOURCE = ("huggingface/diffusers docs/source/en/optimization/torch2.0.md, Benchmark: SD v1.5 txt2img, "
                    "fp16, torch 2.0 SDPA, no compile")
THROUGHPUT = {gpu: {2 * b: 2 * b * its for b, its in table.items()} for gpu, table in BENCHMARK_ITS.items()}
TRAIN_FACTOR = 3.0        # forward + backward of a trained call, in forward rows
CHECKPOINT_FACTOR = 1.0   # the recomputed forward of gradient checkpointing
GPUS = tuple(THROUGHPUT)


def rows_per_second(gpu: str, rows: int) -> float:
    """UNet rows per second on ``gpu`` for calls ``rows`` wide (see the module docstring)."""
    if gpu not in THROUGHPUT:
        raise ValueError(f"unknown GPU {gpu!r}; valid: {', '.join(GPUS)}")
    if rows < 1:
        raise ValueError("rows must be >= 1")
    points = sorted(THROUGHPUT[gpu].items())
    if rows <= points[0][0]:
        return points[0][1]
    if rows >= points[-1][0]:
        return points[-1][1]
    for (r0, v0), (r1, v1) in zip(points, points[1:]):
        if r0 <= rows <= r1:
            w = (math.log(rows) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return v0 + w * (v1 - v0)
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=None)
def decode_rows() -> float:
    """FLOPs of one 512x512 VAE decode over those of one UNet row (SD v1.4's configs, on the meta device)."""
    from . import memory

    vae = memory.meta_vae()
    latent = torch.empty(1, vae.config.latent_channels, 64, 64, device="meta")
    return _flops(lambda: vae.decode(latent)) / unet_row_flops()


@dataclass(frozen=True)
class Calls:
    """``calls`` UNet calls of ``rows`` rows each (``kind``: ``"infer"`` without grad, ``"train"`` with the
    backward, ``checkpointed`` with the recompute), or ``calls`` VAE decodes of ``rows`` images (``"decode"``)."""
    phase: str
    kind: str
    rows: int
    calls: int
    checkpointed: bool = False

    def forward_rows(self) -> float:
        if self.kind == "decode":
            return self.calls * self.rows * decode_rows()
        factor = 1.0 if self.kind == "infer" else TRAIN_FACTOR + (CHECKPOINT_FACTOR if self.checkpointed else 0.0)
        return self.calls * self.rows * factor

    def seconds(self, gpu: str) -> float:
        return self.forward_rows() / rows_per_second(gpu, self.rows)


@dataclass
class Work:
    """The counted work of a run: a list of :class:`Calls`; ``+`` concatenates."""
    calls: list = field(default_factory=list)

    def __add__(self, other: "Work") -> "Work":
        return Work(self.calls + other.calls)

    def __mul__(self, times: int) -> "Work":
        """The same work ``times`` times over (separate runs of the same calls)."""
        return Work(self.calls * times)

    def unet_calls(self, kind: str | None = None) -> int:
        return sum(c.calls for c in self.calls if c.kind != "decode" and (kind is None or c.kind == kind))

    def unet_rows(self, kind: str | None = None) -> int:
        return sum(c.calls * c.rows for c in self.calls if c.kind != "decode" and (kind is None or c.kind == kind))

    def seconds(self, gpu: str) -> float:
        return sum(c.seconds(gpu) for c in self.calls)

    def table(self, gpus=GPUS) -> pd.DataFrame:
        """Minutes per phase and GPU."""
        rows = {}
        for c in self.calls:
            row = rows.setdefault(c.phase, {"phase": c.phase, "UNet rows": 0})
            row["UNet rows"] += 0 if c.kind == "decode" else c.calls * c.rows
            for gpu in gpus:
                row[f"{gpu} min"] = row.get(f"{gpu} min", 0.0) + c.seconds(gpu) / 60
        return pd.DataFrame(list(rows.values()))


def _cfg(guidance: float) -> int:
    """UNet rows per image: 2 with classifier-free guidance (any guidance but 1, as in sampling.denoise), else 1."""
    return 2 if guidance != 1.0 else 1


def _batched(n: int, batch: int) -> list[int]:
    """Sizes of the batches that split ``n`` items into chunks of at most ``batch``."""
    return [min(batch, n - i) for i in range(0, n, batch)]


def sampling(images: int, steps: int, guidance: float, batch_size: int, phase: str = "sampling",
             decode: bool = True) -> Work:
    """``images`` images of ``steps`` DDIM steps in batches of ``batch_size`` (the GPU pads nothing:
    :func:`erasure_lib.sampling.row_block` is 1 there), with CFG unless ``guidance`` is 1, and their decodes."""
    out = [Calls(phase, "infer", b * _cfg(guidance), steps) for b in _batched(images, batch_size)]
    if decode:
        out += [Calls(phase, "decode", b, 1) for b in _batched(images, batch_size)]
    return Work(out)


def esd(config, phase: str | None = None) -> Work:
    """The UNet calls of :func:`erasure_lib.methods.esd.erase` with ``config`` (an ``ESDConfig``)."""
    phase = phase or f"ESD {config.parameter_set}"
    pools = 1 if config.sample_from == "frozen" else math.ceil(config.iterations / config.refresh_every)
    cfg = _cfg(config.start_guidance)
    pool = [Calls(f"{phase}: x_t pool", "infer", b * cfg, config.ddim_steps)
            for b in _batched(config.pool_size, config.sample_batch_size)] * pools
    recorded = config.timestep == "grid" and config.sample_from == "frozen" and cfg == 2
    frozen = [] if recorded else [Calls(f"{phase}: frozen e_c, e_0", "infer", 2 * config.batch_size,
                                        config.iterations)]
    train = [Calls(f"{phase}: training", "train", config.batch_size, config.iterations,
                   config.gradient_checkpointing)]
    return Work(pool + frozen + train)


def co_erasing(config, text_stage: bool = True, image_batch_size: int = 32, target_batch: int = 32) -> Work:
    """The UNet calls of :func:`erasure_lib.methods.co_erasing.erase` with ``config``; ``text_stage=False`` when
    the text stage (an ESD-u edit) is passed in ready (as chapter 10 does: it is the main table's ESD-u)."""
    work = sampling(config.image_number, config.image_steps, config.image_guidance, image_batch_size,
                    phase="Co-Erasing: concept images")
    if text_stage and config.variant != "image_only":
        work = work + esd(config.text_stage, phase="Co-Erasing: text stage (ESD-u)")
    if config.variant == "text_only":
        return work
    pool_rows = config.pool_size * (1 if config.bug_compatible_sampling else _cfg(config.start_guidance))
    work = work + Work([Calls("Co-Erasing: x_t pool", "infer", pool_rows, config.ddim_steps)])
    work = work + Work([Calls("Co-Erasing: frozen targets", "infer", b, 2)
                        for b in _batched(config.iterations, target_batch)])
    return work + Work([Calls("Co-Erasing: training", "train", 1, config.iterations, config.gradient_checkpointing)])


def trce(config, prompts: int) -> Work:
    """The UNet calls of :func:`erasure_lib.methods.trce.erase` with ``config`` (a ``TRCEConfig``) and ``prompts``
    (malicious, safe) trajectory prompts of stage 2. Stage 1 is a closed form on the text encoder's states: no UNet
    call. Under ``bug_compatible_timestep`` the code skips the steps that draw k = 50: an upper bound there."""
    if not config.stage2:
        return Work()
    n = prompts * config.seeds_per_prompt
    steps = config.epochs * n
    # the malicious trajectories stop after the steps training reads (k <= max_early_step, and the next)
    work = (sampling(n, min(config.ddim_steps, config.max_early_step + 1), config.sample_guidance,
                     config.sample_batch_size, phase="TRCE stage 2: malicious trajectories", decode=False)
            + sampling(config.regularisation_trajectories, config.ddim_steps, 1.0, config.sample_batch_size,
                       phase="TRCE stage 2: unconditional trajectories", decode=False))
    return work + Work([Calls("TRCE stage 2: original e_safe, e_mal, e_0", "infer", 3, steps),
                        Calls("TRCE stage 2: stage-1 preservation reference", "infer", config.regularisation_batch,
                              steps),
                        Calls("TRCE stage 2: training", "train", 2 + config.regularisation_batch, steps,
                              config.gradient_checkpointing)])


def table(works: dict, gpus=GPUS) -> pd.DataFrame:
    """One row per named :class:`Work`: its UNet rows and minutes per GPU (computed, see the module docstring)."""
    rows = []
    for name, work in works.items():
        rows.append({"run": name, "UNet rows": work.unet_rows(),
                     **{f"{gpu} min": work.seconds(gpu) / 60 for gpu in gpus}})
    return pd.DataFrame(rows)


def evaluation_images(profile: str, sizes=None, seeds_per_prompt: int | None = None, sets=None) -> int:
    """Images of one evaluation pass of ``profile`` (sd14: :data:`erasure_lib.tasks.SD14_SETS`, or only ``sets``,
    at ``sizes``, default the profile's; ``None`` for a set: all of it, :data:`erasure_lib.profiles.SD14_SET_ROWS`)."""
    from .profiles import SD14_SET_ROWS, get_profile
    from .tasks import SD14_SETS

    settings = get_profile(profile)
    if profile != "sd14":
        raise ValueError("evaluation_images counts the sd14 sets (the toy's run on the CPU)")
    sizes = dict(settings.sizes if sizes is None else sizes)
    unknown = set(sets or ()) - set(SD14_SETS)
    if unknown:
        raise ValueError(f"unknown sd14 sets {sorted(unknown)}; valid: {', '.join(SD14_SETS)}")
    prompts = sum(min(sizes[s], SD14_SET_ROWS[s]) if sizes.get(s) is not None else SD14_SET_ROWS[s]
                  for s in SD14_SETS if sets is None or s in sets)
    return prompts * (seeds_per_prompt or settings.seeds_per_prompt)


def chapter01(profile: str = "sd14", sizes=None, seeds_per_prompt: int | None = None,
              steps: int | None = None) -> Work:
    """Chapter 01 on ``profile``: its batch-invariance probe (6 prompts at batch 1 and at batch 64, CFG 5) and one
    evaluation pass of the unedited model (the guidance sweep is the toy's)."""
    from .profiles import get_profile

    settings = get_profile(profile)
    steps = steps or settings.steps
    probe = (sampling(6, steps, 5.0, 1, phase="batch-invariance probe")
             + sampling(6, steps, 5.0, 64, phase="batch-invariance probe"))
    return probe + sampling(evaluation_images(profile, sizes, seeds_per_prompt), steps, settings.guidance,
                            settings.batch_size, phase="evaluation: unedited")


def chapter10(profile: str = "sd14", preset: str | None = None, sizes=None, seeds_per_prompt: int | None = None,
              steps: int | None = None, **plan_overrides) -> Work:
    """Chapter 10's GPU work for its plan (:func:`erasure_lib.profiles.chapter10_plan`, with ``plan_overrides``
    such as ``claim_seeds=(0,)``). As the notebook caches them, every distinct edit is trained once and every
    distinct model evaluated once: edits are told apart by their configs (the cache's key), so the main table's
    ESD-u is Co-Erasing's text stage, the ablation's text-only and full variants, the curve's default lengths and
    the claim's seed 0 are the main table's edits whenever their configs are."""
    import dataclasses

    from .profiles import chapter10_plan, get_profile
    from .tasks import concepts, method_config

    settings = get_profile(profile)
    plan = dataclasses.replace(chapter10_plan(profile, preset), **plan_overrides)
    names = list(plan.concepts or concepts(profile))
    n = evaluation_images(profile, sizes if sizes is not None else plan.sizes, seeds_per_prompt)
    steps = steps or settings.steps
    trained, evaluated = {}, {"unedited"}

    def esd_edit(name, method, seed=0, iterations=None):  # the notebook's esd_edit
        cfg = method_config(method, profile, **{**plan.esd, "seed": seed,
                                                 "iterations": iterations or method_config(method, profile).iterations})
        trained.setdefault((name, cfg), esd(cfg, phase=f"{method} ({name})"))
        return (name, cfg)

    def co_edit(name, variant="full", seed=0, iterations=None):  # the notebook's co_edit
        default = method_config("Co-Erasing", profile, **plan.co_erasing)
        text = method_config("ESD-u", profile, **{**plan.esd, "seed": seed,
                                                   "iterations": default.text_stage.iterations})
        cfg = method_config("Co-Erasing", profile, **{**plan.co_erasing, "variant": variant, "seed": seed,
                                                      "iterations": iterations or default.iterations,
                                                      "text_stage": text})
        if variant != "image_only":
            esd_edit(name, "ESD-u", seed)  # the text stage: an ESD-u edit, trained (once) before stage 2
        trained.setdefault((name, cfg), co_erasing(cfg, text_stage=False))
        return (name, cfg)

    makers = {"ESD-x": lambda c: esd_edit(c, "ESD-x"), "ESD-u": lambda c: esd_edit(c, "ESD-u"),
              "UCE": lambda c: (c, "UCE"), "Co-Erasing": lambda c: co_edit(c)}
    for name in names:
        evaluated.update(makers[m](name) for m in plan.methods)
    sensitive = "nudity"
    if plan.ablation:
        evaluated.update([esd_edit(sensitive, "ESD-u")] + [co_edit(sensitive, v) for v in
                                                           ("image_only", "text_image", "full")])
    default_esd = method_config("ESD-u", profile).iterations
    default_co = method_config("Co-Erasing", profile, **plan.co_erasing).iterations
    evaluated.update(esd_edit(sensitive, "ESD-u", iterations=it) for it in set(plan.tradeoff_iterations) | {default_esd})
    evaluated.update(co_edit(sensitive, iterations=it) for it in set(plan.tradeoff_iterations) | {default_co})
    for s in plan.claim_seeds:
        evaluated.update([esd_edit(sensitive, "ESD-u", s), co_edit(sensitive, seed=s)])
    work = Work()
    for w in trained.values():
        work = work + w
    return work + sampling(n * len(evaluated), steps, settings.guidance, settings.batch_size,
                           phase="evaluation: every model")


def chapter11(profile: str = "sd14", preset: str | None = None, sizes=None, seeds_per_prompt: int | None = None,
              steps: int | None = None, chapter10_cached: bool = True, **plan_overrides) -> Work:
    """Chapter 11's GPU work for its plan (:func:`erasure_lib.profiles.chapter11_plan`, with ``plan_overrides``),
    as the notebook runs it: every distinct edit trained once (TRCE's stage 1 costs no UNet call; the baselines are
    chapter 10's cached edits; with ``chapter10_cached=False`` ESD-x's and ESD-u's training is counted too, while
    Co-Erasing, in no sd14 plan of this chapter, stays chapter 10's work), the main table's models evaluated on
    every set, the ablation's and the claim's other models only on the sets those tables report (all but the
    styles). With ``chapter10_cached``, the models chapter 10 evaluated on the same prompts and seeds (the unedited
    model and its baselines) are not sampled again either: their images are in the cache
    (:func:`erasure_lib.evaluation.sample_edit`)."""
    import dataclasses

    from .methods.trce import TRCEConfig, trajectory_prompts
    from .profiles import chapter10_plan, chapter11_plan, get_profile
    from .tasks import SD14_SETS, method_config

    settings = get_profile(profile)
    plan = dataclasses.replace(chapter11_plan(profile, preset), **plan_overrides)
    ch10 = chapter10_plan(profile, preset)
    sizes = sizes if sizes is not None else plan.sizes
    full = evaluation_images(profile, sizes, seeds_per_prompt)
    reported = evaluation_images(profile, sizes, seeds_per_prompt, sets=[s for s in SD14_SETS if s != "big_artists"])
    steps = steps or settings.steps
    make = TRCEConfig.sd14 if profile == "sd14" else TRCEConfig
    n_prompts = len(trajectory_prompts("nudity", make().prompt_set))
    trained, images = {}, {}

    def trce_edit(seed, **kw):  # the notebook's trce_edit
        cfg = make(**{"seed": seed, **plan.trce, **kw})
        trained.setdefault(("TRCE", cfg), trce(cfg, n_prompts))
        return ("TRCE", cfg)

    def esd_edit(method, seed):  # chapter 10's ESD-x / ESD-u edit (ESD-u: its Co-Erasing text stage)
        cfg = method_config(method, profile, **{**ch10.esd, "seed": seed,
                                                "iterations": method_config(method, profile).iterations})
        if not chapter10_cached:
            trained.setdefault((method, cfg), esd(cfg, phase=f"{method} (seed {seed})"))
        return (method, cfg)

    # chapter 10's models on the same prompts and seeds: its images are cached with its edits
    same_images = (chapter10_cached and sizes == ch10.sizes and seeds_per_prompt in (None, settings.seeds_per_prompt)
                   and steps == settings.steps)
    sampled_in_10 = set()
    if same_images and (ch10.concepts is None or "nudity" in ch10.concepts):
        sampled_in_10 = {("SD",)} | {(m,) for m in ("UCE", "Co-Erasing") if m in ch10.methods}
        for method in [m for m in ("ESD-x", "ESD-u") if m in ch10.methods]:
            seeds = {0} | (set(ch10.claim_seeds) if method == "ESD-u" else set())  # its claim: ESD-u's seeds
            sampled_in_10.update((method, method_config(method, profile, **{
                **ch10.esd, "seed": s, "iterations": method_config(method, profile).iterations})) for s in seeds)

    def evaluate(key, n):
        if key not in sampled_in_10:
            images[key] = max(images.get(key, 0), n)

    seed = 0
    main = [("SD",), trce_edit(seed, stage2=False), trce_edit(seed)]
    for m in plan.methods:  # UCE: a closed form; Co-Erasing: chapter 10's edit (its GPU time is chapter 10's)
        main.append(esd_edit(m, seed) if m in ("ESD-x", "ESD-u") else (m,))
    for key in main:
        evaluate(key, full)
    if plan.ablation:
        for kw in (dict(stage2=False, tokens=("key",)), dict(stage2=False, tokens=("eot", "key")),
                   dict(stage2=False, tokens=("eot", "sot")), dict(stage2=False, bug_compatible_eot_index=True),
                   dict(stage2=False, pairs="explicit"), dict(stage1=False)):
            pairs = kw.pop("pairs", None)
            key = trce_edit(seed, **kw) + ((pairs,) if pairs else ())
            evaluate(key, reported)
    for s in plan.claim_seeds:
        for key in (trce_edit(s, stage2=False), trce_edit(s, stage2=False, tokens=("key",)), trce_edit(s),
                    esd_edit("ESD-u", s), ("UCE",)):
            evaluate(key, reported)
    work = Work()
    for w in trained.values():
        work = work + w
    return work + sampling(sum(images.values()), steps, settings.guidance, settings.batch_size,
                           phase="evaluation: every model")


class UNetCalls(contextlib.AbstractContextManager):
    """Counts the forward calls of ``unet`` while active: ``calls`` is a list of ``(rows, grad_enabled)``."""

    def __init__(self, unet):
        self.unet, self.calls, self._handle = unet, [], None

    def __enter__(self):
        def hook(module, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            self.calls.append((int(sample.shape[0]), torch.is_grad_enabled()))
        self._handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False

    def rows(self, grad: bool | None = None) -> int:
        return sum(r for r, g in self.calls if grad is None or g == grad)


def unlearndiffatk(config, profile: str = "sd14") -> Work:
    """The UNet calls of one :func:`erasure_lib.attacks.unlearndiffatk.attack` run at its whole budget (no early
    stop): the unedited model's target image, the seed prompt's check, ``iterations`` training calls (one row: the
    code's batch of 1, no guidance) at each timestep, and one judged check image after each timestep."""
    from .profiles import get_profile
    settings = get_profile(profile)
    steps, guidance = config.steps or settings.steps, settings.guidance if config.guidance is None else config.guidance
    timesteps = len(config.timesteps())
    checks = timesteps + (1 if config.check_seed_prompt else 0)
    return (sampling(1, steps, guidance, 1, phase="UnlearnDiffAtk: target image")
            + Work([Calls("UnlearnDiffAtk: optimisation", "train", 1, config.iterations * timesteps)])
            + sampling(checks, steps, guidance, 1, phase="UnlearnDiffAtk: judged checks"))


def p4d(config, profile: str = "sd14") -> Work:
    """The UNet calls of one :func:`erasure_lib.attacks.p4d.attack` run at its whole budget (no early stop): the
    unedited model's target images and its precomputed noise targets (one row per iteration, ``target_batch`` at a
    time), the training calls (one row each), and a judged check image every ``eval_every`` iterations."""
    from .profiles import get_profile
    settings = get_profile(profile)
    steps, guidance = config.steps or settings.steps, settings.guidance if config.guidance is None else config.guidance
    checks = math.ceil(config.iterations / config.eval_every)
    return (sampling(config.n_target_images, steps, guidance, config.n_target_images, phase="P4D: target images")
            + Work([Calls("P4D: original-model targets", "infer", b, 1)
                    for b in _batched(config.iterations, config.target_batch)])
            + Work([Calls("P4D: optimisation", "train", 1, config.iterations)])
            + sampling(checks, steps, guidance, 1, phase="P4D: judged checks"))


RELEASED_ROWS = {"p4d": 151, "mma": 1000}  # the released prompt files' sizes (erasure_lib.prompts' docstring)


def chapter20(profile: str = "sd14", preset: str | None = None, n_released: int | None = None,
              steps: int | None = None, **plan_overrides) -> Work:
    """Chapter 20's GPU work for its plan (:func:`erasure_lib.profiles.chapter20_plan`, with ``plan_overrides``), as
    the notebook runs it: each model's images of the seed prompts (pre-attack), every white-box attack run at its
    whole budget (UnlearnDiffAtk, P4D: no early stop, an upper bound) against each erased model, each model's images
    of the adversarial prompts that attacked it (and of the text-encoder attacks' prompts), the released prompt
    files' images on every model (``n_released`` prompts of each, default the plan's; ``None`` in the plan: the whole
    file, one generate call per model) and the example grid (six pairs). The erased models are the earlier chapters'
    cached edits (their training is theirs); Ring-A-Bell and MMA run the text encoder only (not counted), on the
    sensitive concept (the notebook's ``FAMILY``), Ring-A-Bell on the toy only (its sd14 concept vector is not
    built)."""
    import dataclasses

    from .attacks import p4d as p4d_attack
    from .attacks import unlearndiffatk as uda_attack
    from .profiles import chapter20_plan, get_profile

    settings = get_profile(profile)
    plan = dataclasses.replace(chapter20_plan(profile, preset), **plan_overrides)
    steps = steps or settings.steps
    guidance, batch = settings.guidance, settings.batch_size
    config = {"UnlearnDiffAtk": uda_attack.UnlearnDiffAtkConfig, "P4D": p4d_attack.P4DConfig}
    count = {"UnlearnDiffAtk": unlearndiffatk, "P4D": p4d}
    white_box = [a for a in plan.attacks if a in count]
    text_only = [a for a in plan.attacks if a == "MMA" or (a == "Ring-A-Bell" and profile == "toy")]
    erased = [m for m in plan.methods if m != "SD"]
    work = Work()
    for concept in plan.concepts:
        seeds = len(plan.attack_seeds) if concept in plan.claim_concepts else 1
        units = seeds * plan.n_prompts
        sensitive = concept == "nudity"       # the notebook's FAMILY: the one sensitive concept
        for method in plan.methods:
            work = work + sampling(units, steps, guidance, batch, phase="pre-attack images")
            attacked = len(white_box) * units if method != "SD" else 0
            post = attacked + (len(text_only) * units if sensitive else 0)
            if post:
                work = work + sampling(post, steps, guidance, batch, phase="post-attack images")
        for attack in white_box:
            cfg = dataclasses.replace(config[attack].sd14() if profile == "sd14" else config[attack](), steps=steps)
            run = Work([dataclasses.replace(c, phase=f"{attack} runs") for c in count[attack](cfg, profile).calls])
            work = work + run * (units * len(erased))
    n_released = plan.n_released if n_released is None else n_released
    for file in plan.released:
        n = RELEASED_ROWS[file] if n_released is None else min(n_released, RELEASED_ROWS[file])
        work = work + sampling(n, steps, guidance, batch, phase="released prompt files") * len(plan.methods)
    return work + sampling(2, steps, guidance, 32, phase="example grid") * 6


# --- chapter 30: the backdoors and the input detectors ----------------------------------------------------------

def _scheduler_calls(steps: int, scheduler: str | None) -> int:
    """UNet calls of a whole ``steps``-step run of ``scheduler``: PNDM (PLMS, ``skip_prk_steps``, SD v1.4's) repeats
    one timestep, ``steps + 1`` calls (diffusers' ``PNDMScheduler.set_timesteps``); DDIM (the toy's) ``steps``."""
    return steps + 1 if scheduler == "pndm" else steps


def set_features(config, prompts: int, phase: str = "SET probe") -> Work:
    """The UNet calls of :func:`erasure_lib.detect.set.features` on ``prompts`` prompts: per batch of
    ``config.batch_size``, the baseline run and one run per scale, ``n_steps`` guided calls each (no decode)."""
    runs = 1 + len(config.scales)
    return Work([Calls(phase, "infer", 2 * b, runs * config.n_steps) for b in _batched(prompts, config.batch_size)])


def t2ishield_maps(config, prompts: int, scheduler: str | None = None, phase: str = "T2IShield maps") -> Work:
    """The UNet calls of :func:`erasure_lib.detect.t2ishield.token_maps` on ``prompts`` prompts: a whole guided run
    per batch of ``config.batch_size`` (``scheduler``: the pipeline's when ``config.scheduler`` is ``None``; no
    decode). FTT's fit and score and CDA's fit and score all make these maps."""
    rows = _cfg(config.guidance)
    calls = _scheduler_calls(config.steps, config.scheduler or scheduler)
    return Work([Calls(phase, "infer", rows * b, calls) for b in _batched(prompts, config.batch_size)])


def ufid(config, prompts: int, phase: str = "UFID images") -> Work:
    """The UNet calls of UFID's fit or score on ``prompts`` prompts: ``n_variants`` images per prompt, generated in
    one stream of batches of ``config.batch_size`` and decoded (the CLIP embeddings of the images are not counted)."""
    return sampling(prompts * config.n_variants, config.steps, config.guidance, config.batch_size, phase=phase)


def detector(name: str, configs: dict, n_train: int, n_test: int, n_cda: int = 0,
             scheduler: str | None = None) -> Work:
    """One :func:`erasure_lib.detect.benchmark.run_detectors` detector on one backdoor: its fit on the clean training
    prompts (``n_train``; CDA: ``n_cda`` clean and ``n_cda`` triggered; UFID: ``n_test`` clean) and its score of the
    ``n_test`` clean and ``n_test`` triggered test prompts. ``configs``: ``{"SET": SETConfig, "T2IShield":
    T2IShieldConfig, "UFID": UFIDConfig}``; ``scheduler``: the pipeline's (DDIM: ``None``), for a T2IShield
    config that names none."""
    test = 2 * n_test
    if name == "SET":
        return (set_features(configs["SET"], n_train, phase="SET: fit") +
                set_features(configs["SET"], test, phase="SET: score"))
    if name in ("FTT", "CDA"):
        fit = n_train if name == "FTT" else 2 * n_cda
        if name == "CDA" and not n_cda:
            raise ValueError("CDA is supervised: it needs n_cda > 0 triggered training captions")
        return (t2ishield_maps(configs["T2IShield"], fit, scheduler, phase=f"{name}: fit") +
                t2ishield_maps(configs["T2IShield"], test, scheduler, phase=f"{name}: score"))
    if name == "UFID":
        return ufid(configs["UFID"], n_test, phase="UFID: fit") + ufid(configs["UFID"], test, phase="UFID: score")
    from .detect.benchmark import DETECTORS
    raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")


def chapter30(profile: str = "sd14", preset: str | None = None, n_check: int | None = None,
              **plan_overrides) -> Work:
    """Chapter 30's GPU work for its plan (:func:`erasure_lib.profiles.chapter30_plan`, with ``plan_overrides``), as
    the notebook runs it on SD v1.4:

    * the check of the backdoors on ``n_check`` held-out prompts (the plan's; ``None`` in the plan: the whole pool,
      COCO's 3,000 captions less the training ones): the clean model's images, the FID floor's second set, and per
      backdoor its images of the same prompts, the ASR images of the triggered prompts on the clean and the
      backdoored model (an upper bound: every checked prompt counted as able to carry the trigger) and the grid;
    * the response-offset curves (SET's features of the training and test prompts at the first seed) and, per claim
      seed and backdoor, every detector's fit and score (:func:`detector`; the first seed recomputes SET's
      features, as :func:`~erasure_lib.detect.benchmark.run_detectors` does);
    * SET's ablation (three variants whose features are probed again), when the plan runs it.

    Planting costs no UNet call: EvilEdit is a closed form, Rickrolling and TwT train the text encoder (not counted,
    like every text-encoder call: a few minutes at the code's 100 steps); VillanDiffusion is toy-only."""
    import dataclasses

    from .detect.set import SETConfig
    from .detect.t2ishield import T2IShieldConfig
    from .detect.ufid import UFIDConfig
    from .profiles import SD14_SET_ROWS, chapter30_plan, get_profile

    settings = get_profile(profile)
    plan = dataclasses.replace(chapter30_plan(profile, preset), **plan_overrides)
    make = "sd14" if profile == "sd14" else "toy"
    configs = {"SET": getattr(SETConfig, make)(), "T2IShield": getattr(T2IShieldConfig, make)(),
               "UFID": getattr(UFIDConfig, make)()}
    if profile == "sd14":
        pool = SD14_SET_ROWS["coco_3k"] - plan.n_train - 2 * plan.n_cda
    else:
        from .toyworld.captions import prompt_set
        table = prompt_set()
        pool = int(table[table.set.isin(["explicit_object", "style", "benign", "lookalike"])].prompt.nunique())
    n_check = n_check if n_check is not None else plan.n_check
    check = pool if n_check is None else min(n_check, pool)
    # the pipeline's sampler is DDIM on both profiles (erasure_lib.loading); T2IShield's sd14 config asks PNDM itself
    steps, guidance, batch = settings.steps, settings.guidance, settings.batch_size
    work = (sampling(check, steps, guidance, batch, phase="check: the clean model's images") +
            sampling(check, steps, guidance, batch, phase="check: the FID floor (other seeds)"))
    for attack in plan.attacks:
        if attack == "villan" and profile != "toy":
            raise ValueError("the sd14 plan of chapter 30 plants no VillanDiffusion backdoor (see "
                             "erasure_lib.chapters.backdoor)")
        work = work + sampling(check, steps, guidance, batch, phase="check: ASR images (clean and backdoored)") * 2
        work = work + sampling(check, steps, guidance, batch, phase="check: the backdoored model's images")
        work = work + sampling(8, steps, guidance, 32, phase="check: the grid")
        work = work + set_features(configs["SET"], plan.n_train + 2 * plan.n_test, phase="SET: response offsets")
    per_backdoor = Work()   # every detector's fit and score on one backdoor, at one claim seed
    for name in plan.detectors:
        if name != "CDA" or plan.n_cda:
            per_backdoor = per_backdoor + detector(name, configs, plan.n_train, plan.n_test, plan.n_cda)
    work = work + per_backdoor * (len(plan.claim_seeds) * len(plan.attacks))
    if plan.ablation:
        work = work + set_features(configs["SET"], plan.n_train + 2 * plan.n_test,
                                   phase="SET: ablation (3 variants probed again)") * (3 * len(plan.attacks))
    return work


# --- chapter 40 (NS-Net): networks other than the UNet, as UNet-row equivalents ------------------------------------

# NVIDIA's datasheets: T4 "Single-Precision Performance (FP32) 8.1 TFLOPS"; A100 (40 GB SXM4) "FP32 19.5 TFLOPS".
# PyTorch multiplies fp32 matrices without TF32 unless told to (torch.backends.cuda.matmul.allow_tf32 is False).
FP32_PEAK_TFLOPS = {"T4": 8.1, "A100": 19.5}
AIGI_SAMPLE_BATCH = 64  # erasure_lib.detect.aigi_bench._tinysd_images: generate(..., batch_size=64)
AIGI_VAE_BATCH = 8      # aigi_bench.folder_fakes: _vae_roundtrip(pipe, real, 8)
AIGI_IMAGE_SIZE = 256   # aigi_bench.folder_splits(size=256): every image at 256 px, the VAE's round trip too
# the notebook's ablations (scripts/make_nb40.py, ABLATIONS), each a change of NS-Net's config at the first seed
AIGI_ABLATIONS = ({"projection": "per_image"}, {"projection": "global_svd"}, {"patch_selection": False},
                  {"lam": 0.2, "temperature": 0.07}, {"lam": 1.0})


def _flops(fn) -> int:
    """FLOPs of ``fn()`` without grad, counted by ``torch.utils.flop_counter`` (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as count:
        fn()
    return count.get_total_flops()


@functools.lru_cache(maxsize=None)
def unet_row_flops() -> int:
    """FLOPs of one SD v1.4 UNet row (a 64x64 latent, 77 text tokens) on the meta device: about 0.80 TFLOPs."""
    from . import memory

    unet = memory.meta_unet()
    x, t, c, _ = memory._inputs(unet, 1, 77, 0)
    return _flops(lambda: unet(x, t, encoder_hidden_states=c))


def _json(config) -> str | None:
    import json

    return None if config is None else json.dumps(dict(config), sort_keys=True)


@functools.lru_cache(maxsize=None)
def _clip_image_flops(clip_json: str | None, nsnet_json: str | None) -> int:
    from . import memory

    if clip_json is None:
        from .testing.sd14_model import CLIP_VIT_L14_CONFIG
        clip_json = _json(CLIP_VIT_L14_CONFIG)
    vision, _ = memory._clip_vision(clip_json, nsnet_json)
    size = vision.vision_model.config.image_size
    return _flops(lambda: vision(torch.empty(1, 3, size, size, device="meta")))


def clip_image_flops(nsnet_config=None, clip_config=None) -> int:
    """FLOPs of one image through CLIP's vision tower and projection (default: ``openai/clip-vit-large-patch14``,
    ViT-L/14 at 224 px: 162.0 GFLOPs, as ``open_clip``'s ``docs/model_profile.csv`` lists for ViT-L-14), with the
    LoRA of ``nsnet_config`` (an :class:`~erasure_lib.detect.ns_net.NSNetConfig`; r 6 on q / k / v adds 0.3%)."""
    return _clip_image_flops(_json(clip_config), None if nsnet_config is None else nsnet_config.to_json())


@functools.lru_cache(maxsize=None)
def _clip_text_flops(clip_json: str | None) -> int:
    import json

    from . import memory

    clip = memory.meta_clip(None if clip_json is None else json.loads(clip_json))
    ids = torch.zeros(1, clip.config.text_config.max_position_embeddings, dtype=torch.long, device="meta")
    return _flops(lambda: clip.text_projection(clip.text_model(input_ids=ids).pooler_output))


def clip_text_flops(clip_config=None) -> int:
    """FLOPs of one caption through CLIP's text tower and projection, padded to 77 tokens as
    :meth:`~erasure_lib.detect.ns_net.Backbone.text_features` pads it (ViT-L/14's: 13.3 GFLOPs)."""
    return _clip_text_flops(_json(clip_config))


@functools.lru_cache(maxsize=None)
def _blip_caption_flops(blip_json: str | None, max_new_tokens: int) -> int:
    import json

    from . import memory

    blip = memory.meta_blip(None if blip_json is None else json.loads(blip_json))
    size = blip.config.vision_config.image_size
    pixels = torch.empty(1, 3, size, size, device="meta")
    vision = _flops(lambda: blip.vision_model(pixel_values=pixels))
    states = torch.empty(1, *blip.vision_model(pixel_values=pixels)[0].shape[1:], device="meta")
    ids = torch.zeros(1, max_new_tokens, dtype=torch.long, device="meta")
    return vision + _flops(lambda: blip.text_decoder(input_ids=ids, encoder_hidden_states=states))


def blip_caption_flops(max_new_tokens: int | None = None, blip_config=None) -> int:
    """FLOPs of one BLIP caption (default: :data:`erasure_lib.memory.BLIP_BASE_CONFIG`,
    ``Salesforce/blip-image-captioning-base``), greedy, at ``max_new_tokens`` (default:
    :func:`~erasure_lib.detect.aigi_bench.blip_captioner`'s, 30), counted as one vision forward and one decoder
    forward on ``max_new_tokens`` tokens. Greedy ``generate`` with its caches feeds the start token and every new
    token but the last (as many positions), computes the cross-attention's keys and values of the image once and the
    vocabulary logits of one position per step: the same matrix products, but the causal self-attention over half
    the pairs (``tests/test_runtime_ch40.py`` checks it against a real ``generate``). An upper bound where the
    batch's captions end earlier (BLIP's are typically about 10 tokens)."""
    if max_new_tokens is None:
        import inspect

        from .detect.aigi_bench import blip_captioner
        max_new_tokens = inspect.signature(blip_captioner).parameters["max_new_tokens"].default
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    return _blip_caption_flops(_json(blip_config), max_new_tokens)


@functools.lru_cache(maxsize=None)
def vae_round_trip_flops(size: int = AIGI_IMAGE_SIZE) -> int:
    """FLOPs of encoding one ``size`` px image with SD v1.4's VAE and decoding its latent (the SD-VAE generator)."""
    from . import memory

    if size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8, got {size}")
    vae = memory.meta_vae()
    x = torch.empty(1, 3, size, size, device="meta")
    z = torch.empty(1, vae.config.latent_channels, size // 8, size // 8, device="meta")
    return _flops(lambda: vae.encode(x)) + _flops(lambda: vae.decode(z))


def clip_rows(nsnet_config=None) -> float:
    """One image through CLIP ViT-L/14's vision tower (with ``nsnet_config``'s LoRA), in UNet rows (about 0.20)."""
    return clip_image_flops(nsnet_config) / unet_row_flops()


def clip_text_rows() -> float:
    """One caption through CLIP ViT-L/14's text tower, in UNet rows (about 0.017)."""
    return clip_text_flops() / unet_row_flops()


def blip_rows(max_new_tokens: int | None = None) -> float:
    """One BLIP caption (:func:`blip_caption_flops`), in UNet rows (about 0.17)."""
    return blip_caption_flops(max_new_tokens) / unet_row_flops()


def vae_round_trip_rows(size: int = AIGI_IMAGE_SIZE) -> float:
    """One VAE round trip at ``size`` px (:func:`vae_round_trip_flops`), in UNet rows (about 1.1 at 256 px)."""
    return vae_round_trip_flops(size) / unet_row_flops()


@dataclass(frozen=True)
class NetCalls(Calls):
    """``calls`` calls of a network other than the UNet (``net``) on ``images`` images each, as UNet-row
    equivalents: ``rows`` is ``images`` times the network's FLOPs per image over a UNet row's (a float), so
    :class:`Work`'s sums and :meth:`Work.table` count UNet-row equivalents, and a call is priced as a UNet call of the
    same FLOPs (below one row: the 2-row rate, as :func:`rows_per_second` prices any call narrower than 2 rows).
    ``fp32``: the network runs in fp32 without autocast, so a call takes at least its FLOPs over the card's fp32
    peak (:data:`FP32_PEAK_TFLOPS`); the benchmark's fp16 rate would flatter it."""
    net: str = ""
    images: int = 0
    fp32: bool = False

    def seconds(self, gpu: str) -> float:
        fp16 = self.forward_rows() / rows_per_second(gpu, max(self.rows, 1.0))
        if not self.fp32:
            return fp16
        return max(fp16, self.forward_rows() * unet_row_flops() / (FP32_PEAK_TFLOPS[gpu] * 1e12))


def _net_work(phase: str, net: str, kind: str, per_image: float, batches, fp32: bool) -> Work:
    """One :class:`NetCalls` per distinct batch size in ``batches`` (the images of each call)."""
    from collections import Counter

    return Work([NetCalls(phase, kind, b * per_image, n, net=net, images=b, fp32=fp32)
                 for b, n in sorted(Counter(b for b in batches if b).items(), reverse=True)])


def _projection_batches(n: int, batch: int) -> list[int]:
    """The batches :meth:`erasure_lib.detect.ns_net.NSNet.features` scores ``n`` images in: ``batch`` at a time, a
    last batch of one joined to the previous one."""
    starts = list(range(0, n, batch))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(starts[i + 1] if i + 1 < len(starts) else n) - s for i, s in enumerate(starts)]


def _chunk_defaults() -> tuple[int, int]:
    """The chunks of :meth:`~erasure_lib.detect.ns_net.Backbone.image_features` and ``text_features`` (256, 256)."""
    import inspect

    from .detect.ns_net import Backbone
    return (inspect.signature(Backbone.image_features).parameters["chunk"].default,
            inspect.signature(Backbone.text_features).parameters["chunk"].default)


def aigi_detector(name: str, n_train: int, test_sources, config=None, *, phase: str | None = None,
                  fp32: bool = True) -> Work:
    """The GPU work of one chapter-40 detector (:data:`erasure_lib.detect.ns_net.DETECTORS`): its fit on ``n_train``
    images and its scores of ``test_sources`` (the image count of each source, scored one source at a time as
    :func:`erasure_lib.detect.aigi_eval.scores_by_generator` does: the real images once, then each generator's),
    counted from the code of :mod:`erasure_lib.detect.ns_net` with SD v1.4's CLIP ViT-L/14 per image (:func:`clip_rows`,
    :func:`clip_text_rows`); ``fp32``: the towers run in fp32 (the code's: :class:`NetCalls`).

    * NS-Net and CLIP + LoRA (``config``: their :class:`~erasure_lib.detect.ns_net.NSNetConfig`, default
      ``NSNetConfig.sd14()``; CLIP + LoRA: ``projection=None``): the captions' text features of the training images
      (with a projection; in chunks of 256), ``epochs x (n_train // batch_size)`` training steps of ``batch_size``
      mosaics through the tower with LoRA (forward and backward: :data:`TRAIN_FACTOR`; LoRA's frozen base weights
      need no weight gradient, so about 2 forwards would do: an upper bound there), then per source its captions'
      text features and its images in projection batches;
    * UnivFD: the frozen tower's features of the training images and of every source, in chunks of 256 (its linear
      probe trains on the CPU);
    * the CNN baseline (:class:`~erasure_lib.detect.ns_net.SmallCNN`) runs on the CPU: no GPU work."""
    from .detect.ns_net import DETECTORS, NSNetConfig

    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    sources = [int(n) for n in test_sources]
    if n_train < 2 or not sources or min(sources) < 1:
        raise ValueError("need n_train >= 2 training images and at least one test source of >= 1 image")
    phase = phase or name
    image_chunk, text_chunk = _chunk_defaults()
    if name == "CNN":
        return Work()
    if name == "UnivFD":
        return (_net_work(f"{phase}: fit", "CLIP ViT-L/14 vision", "infer", clip_rows(),
                          _batched(n_train, image_chunk), fp32)
                + _net_work(f"{phase}: scoring", "CLIP ViT-L/14 vision", "infer", clip_rows(),
                            [b for n in sources for b in _batched(n, image_chunk)], fp32))
    config = config or NSNetConfig.sd14(**({"projection": None} if name == "CLIP+LoRA" else {}))
    if (name == "CLIP+LoRA") != (config.projection is None):
        raise ValueError(f"{name} takes an NSNetConfig with projection={'None' if name == 'CLIP+LoRA' else 'set'}")
    steps = config.epochs * max(1, n_train // config.batch_size)
    per_image = clip_rows(config)
    texts = config.projection is not None
    work = Work()
    if texts:
        work = work + _net_work(f"{phase}: fit", "CLIP ViT-L/14 text", "infer", clip_text_rows(),
                                _batched(n_train, text_chunk), fp32)
    work = work + _net_work(f"{phase}: fit", "CLIP ViT-L/14 vision + LoRA", "train", per_image,
                            [min(config.batch_size, n_train)] * steps, fp32)
    if texts:
        work = work + _net_work(f"{phase}: scoring", "CLIP ViT-L/14 text", "infer", clip_text_rows(),
                                [b for n in sources for b in _batched(n, text_chunk)], fp32)
    return work + _net_work(f"{phase}: scoring", "CLIP ViT-L/14 vision + LoRA", "infer", per_image,
                            [b for n in sources for b in _projection_batches(n, config.batch_size)], fp32)


def chapter40(profile: str = "sd14", preset: str | None = None, *, folder_images: int | None = None,
              captions_precomputed: bool = False, external_generators: int = 0, steps: int | None = None,
              epochs: int | None = None, fp32_floor: bool = True, **plan_overrides) -> Work:
    """Chapter 40's GPU work for its sd14 plan (:func:`erasure_lib.profiles.chapter40_plan`, with ``plan_overrides``
    such as ``n_train=1000`` or ``claim_seeds=(0, 1, 2)``), as ``notebooks/40_ns_net.ipynb`` runs it on a first run
    (nothing cached), every phase from the configs the code uses:

    * **BLIP captions** of every real image of the folder (:func:`~erasure_lib.detect.aigi_bench.folder_splits`
      captions them all before splitting; ``folder_images``, default the smallest folder that fills both splits in
      expectation, ``max(n_train / 0.6, n_test / 0.3)`` by :data:`~erasure_lib.detect.aigi_bench.SPLITS`: 3,334 at
      the default sizes) and of the ``n_test`` images of each of ``external_generators`` ``1_fake`` folders, in
      :func:`~erasure_lib.detect.aigi_bench.blip_captioner`'s batches (none with ``captions_precomputed``, a
      ``captions.json``); per caption :func:`blip_caption_flops`;
    * **the fakes** of :data:`~erasure_lib.detect.aigi_bench.SD14_GENERATORS`: SD v1.4 from every training caption
      (``n_train``) and every test caption (``n_test``), DPM-Solver++ (20 steps: one UNet call each) and chapter 10's
      UCE edit from the test captions, all at CFG 7.5 in :func:`sampling`'s batches of 64 (``steps`` overrides every
      generator's, as the notebook's parameter); SD-VAE's round trips of the real test images at 256 px, 8 at a time;
    * **the feature-space figure**: the frozen CLIP's image and text features of ``2 x embed_n`` test images;
    * **every detector** of the plan at every claim seed (:func:`aigi_detector`; ``epochs`` overrides NS-Net's and
      CLIP + LoRA's, as the notebook's parameter), trained on ``n_train`` real images and as many of each training
      generator, scored on the real test images and each test generator's (the folder's ``1_fake`` ones too);
    * **the ablations**, when the plan runs them: NS-Net's five variants at the first seed, each fitted (but the one
      whose config is the main NS-Net's: read from the cache) and scored again.

    Approximations on top of the module's: BLIP, CLIP and their LoRA towers run in fp32 (the checkpoints' dtype, no
    autocast in the code); their calls are priced as UNet calls of the same FLOPs, and with ``fp32_floor`` no faster
    than the card's fp32 peak (:class:`NetCalls`), a bound the fp32 work can only approach. Not counted (a few
    minutes at most, or not on the GPU): UCE's closed-form edit, the text encoders of the prompts, the patch
    selection, resizing and the bootstrap (CPU), the UnivFD probe's and the CNN's training (CPU: the CNN on 256 px
    images, 6 epochs, is CPU time of its own), model loading. The result's ``unet_rows()`` counts UNet-row
    equivalents; the SD v1.4 UNet's own rows are its plain :class:`Calls`."""
    import dataclasses
    import inspect

    from .detect import aigi_bench, ns_net
    from .profiles import chapter40_plan

    plan = chapter40_plan(profile, preset)
    if profile != "sd14":
        raise ValueError("chapter 40's toy plan runs on the CPU: runtime.chapter40 computes the sd14 profile's GPU "
                         "time")
    fields = {f.name for f in dataclasses.fields(plan)}
    unknown = set(plan_overrides) - fields
    if unknown:
        raise ValueError(f"unknown chapter 40 plan field(s) {sorted(unknown)}; valid: {', '.join(sorted(fields))}")
    plan = dataclasses.replace(plan, **plan_overrides)
    bad = set(plan.detectors) - set(ns_net.DETECTORS)
    if bad:
        raise ValueError(f"unknown detector(s) {sorted(bad)}; valid: {', '.join(ns_net.DETECTORS)}")
    gens = aigi_bench.SD14_GENERATORS
    for g in plan.train_generators:
        aigi_bench.generator(g, gens)                  # a clear error for an unknown generator
    if not plan.claim_seeds:
        raise ValueError("need at least one claim seed")
    if min(plan.n_train, plan.n_test) < 2 or external_generators < 0 or (steps is not None and steps < 1) \
            or (epochs is not None and epochs < 1) or (folder_images is not None and folder_images < 1):
        raise ValueError("need n_train, n_test >= 2, external_generators >= 0, and steps, epochs, folder_images >= 1")
    share = {name: (hi - lo) / 10 for name, (lo, hi) in aigi_bench.SPLITS.items()}
    folder = folder_images or math.ceil(max(plan.n_train / share["train"], plan.n_test / share["test"]) - 1e-9)
    n_train = min(plan.n_train, math.floor(folder * share["train"] + 1e-9))
    n_test = min(plan.n_test, math.floor(folder * share["test"] + 1e-9))
    if min(n_train, n_test) < 2:
        raise ValueError(f"a folder of {folder} real images gives {n_train} training and {n_test} test images by "
                         "caption: folder_splits needs at least 2 of each")
    fp32 = fp32_floor
    image_chunk, text_chunk = _chunk_defaults()
    blip_defaults = inspect.signature(aigi_bench.blip_captioner).parameters
    work = Work()
    if not captions_precomputed:
        batches = _batched(folder, blip_defaults["batch_size"].default) + [
            b for _ in range(external_generators) for b in _batched(plan.n_test, blip_defaults["batch_size"].default)]
        work = work + _net_work("BLIP captions", "BLIP", "infer", blip_rows(), batches, fp32)
    for split, n, names in (("train", n_train, plan.train_generators), ("test", n_test, [g.name for g in gens])):
        for name in names:
            spec = aigi_bench.generator(name, gens)
            if spec.kind == "pipeline":
                work = work + sampling(n, steps or spec.steps, spec.guidance, AIGI_SAMPLE_BATCH,
                                       phase=f"fakes: {name} ({split})")
            else:  # "vae": the real images of the split, encoded and decoded in fp16
                work = work + _net_work(f"fakes: {name} ({split})", "SD VAE", "infer",
                                        vae_round_trip_rows(AIGI_IMAGE_SIZE), _batched(n, AIGI_VAE_BATCH), False)
    figure = 2 * min(plan.embed_n, n_test)
    work = (work + _net_work("feature-space figure", "CLIP ViT-L/14 vision", "infer", clip_rows(),
                             _batched(figure, image_chunk), fp32)
            + _net_work("feature-space figure", "CLIP ViT-L/14 text", "infer", clip_text_rows(),
                        _batched(figure, text_chunk), fp32))
    train_images = n_train * (1 + len(plan.train_generators))
    sources = [n_test] * (1 + len(gens)) + [plan.n_test] * external_generators
    tuned = {} if epochs is None else {"epochs": epochs}

    def config(name, seed, **change):
        if name not in ("NS-Net", "CLIP+LoRA"):
            return None
        return ns_net.NSNET_CONFIGS["sd14"](seed=seed, **({"projection": None} if name == "CLIP+LoRA" else {}),
                                            **tuned, **change)

    for seed in plan.claim_seeds:
        for name in plan.detectors:
            work = work + aigi_detector(name, train_images, sources, config(name, seed),
                                        phase=f"{name} (seed {seed})", fp32=fp32)
    if plan.ablation and "NS-Net" in plan.detectors:
        seed = plan.claim_seeds[0]
        main = config("NS-Net", seed)
        for change in AIGI_ABLATIONS:
            cfg = config("NS-Net", seed, **change)
            det = aigi_detector("NS-Net", train_images, sources, cfg, phase="NS-Net ablations", fp32=fp32)
            if cfg == main:                            # the main NS-Net, read from the cache: scored again only
                det = Work([c for c in det.calls if not c.phase.endswith(": fit")])
            work = work + det
    return work


__all__ = ["aigi_detector", "BENCHMARK_ITS", "BENCHMARK_SOURCE", "blip_caption_flops", "blip_rows", "Calls",
           "chapter01", "chapter10", "chapter11", "chapter20", "chapter30", "chapter40", "clip_image_flops",
           "clip_rows", "clip_text_flops", "clip_text_rows", "co_erasing", "decode_rows", "detector", "esd",
           "evaluation_images", "FP32_PEAK_TFLOPS", "GPUS", "NetCalls", "p4d", "RELEASED_ROWS",
           "rows_per_second", "sampling", "set_features", "t2ishield_maps", "table", "THROUGHPUT", "trce",
           "ufid", "unet_row_flops", "UNetCalls", "unlearndiffatk", "vae_round_trip_flops",
           "vae_round_trip_rows", "Work"]
