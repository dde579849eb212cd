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
    from torch.utils.flop_counter import FlopCounterMode

    from . import memory

    unet, vae = memory.meta_unet(), memory.meta_vae()
    x, t, c, _ = memory._inputs(unet, 1, 77, 0)
    with torch.no_grad(), FlopCounterMode(display=False) as count:
        unet(x, t, encoder_hidden_states=c)
    unet_flops = count.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as count:
        vae.decode(torch.empty_like(x))
    return count.get_total_flops() / unet_flops


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


__all__ = ["BENCHMARK_ITS", "BENCHMARK_SOURCE", "Calls", "GPUS", "THROUGHPUT", "UNetCalls", "Work", "co_erasing",
           "chapter01", "chapter10", "chapter11", "decode_rows", "esd", "evaluation_images", "rows_per_second",
           "p4d", "sampling", "table", "trce", "unlearndiffatk"]
