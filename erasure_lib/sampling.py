"""Batched, seeded generation with a diffusers ``StableDiffusionPipeline``, and the partial-trajectory
primitives the methods need.

Determinism per (prompt, seed), whatever the batch size
    Each image has its own ``torch.Generator`` seeded with its seed, so its initial latent is the same in
    any batch; DDIM with eta=0 is deterministic after that. One more thing breaks bit-equality on CPU: BLAS
    and oneDNN pick different kernels for different batch sizes, and a batch of 1 or 3 rounds differently
    (by one grey level in about one pixel in 20,000) from a batch of 8 or 64. Every UNet call on the CPU
    therefore runs on a whole number of blocks of :data:`ROW_BLOCK` images, padding the last block with
    copies of its last row, and the VAE decodes in blocks of exactly :data:`ROW_BLOCK`; measured on the toy
    zoo, results are then bit-identical for every batch size and every position of an image in its batch
    (``tests/test_sampling.py``). The padding buys determinism only where it is measured (the CPU); on a GPU
    it would make a call of one image up to 8 times more expensive and cuDNN / cuBLAS give no such guarantee
    anyway, so there the block is 1 (no padding) by default. :func:`row_block` gives the block of a device;
    set the environment variable ``ERASURE_BOOK_ROW_BLOCK`` (an integer >= 1) to choose it everywhere.

Partial trajectories
    :func:`denoise` runs any slice ``[start, stop)`` of the DDIM schedule, optionally recording every
    latent and every (conditional, unconditional) noise prediction (:class:`Trajectory`): ESD and
    Co-Erasing take ``x_t`` from the first steps of a guided trajectory (:func:`latents_at`), TRCE's
    second stage and SET read the per-step noise predictions. :func:`generate` is the same loop run to the
    end and decoded, through the pipeline's own ``__call__``.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

import os

ROW_BLOCK = 8  # on the CPU, every UNet batch is a multiple of this many images (see the module docstring)
ROW_BLOCK_ENV = "ERASURE_BOOK_ROW_BLOCK"


def _env_count(name: str) -> int | None:
    """The integer >= 1 in the environment variable ``name``, ``None`` when it is unset or empty; else an error."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return count


def row_block(device=None) -> int:
    """The padding block of UNet / VAE calls on ``device``: ``$ERASURE_BOOK_ROW_BLOCK`` if set, else
    :data:`ROW_BLOCK` on the CPU (bit-identical results for every batch size) and 1 elsewhere (no padding)."""
    block = _env_count(ROW_BLOCK_ENV)
    if block is not None:
        return block
    kind = torch.device(device).type if device is not None else "cpu"
    return ROW_BLOCK if kind == "cpu" else 1


def _padded(n: int, block: int = ROW_BLOCK) -> int:
    return -(-n // block) * block


def _pad_list(items: list, n: int) -> list:
    return items + [items[-1]] * (n - len(items))


def _check(prompts, seeds, image_embeds=None, batch_size=1):
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    if image_embeds is not None and len(image_embeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(image_embeds)} image embeddings")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")


def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], steps: int = 25, guidance: float = 5.0,
             negative_prompt: str | None = None, batch_size: int = 32, progress: bool = True,
             image_embeds: torch.Tensor | None = None, **pipe_kwargs) -> np.ndarray:
    """Generate one image per (prompt, seed); returns uint8 ``(N, H, W, 3)``.

    ``batch_size`` is rounded up to a multiple of :func:`row_block` (on the CPU, lowered when that gives every
    :func:`sample_workers` thread a batch); on the CPU the result does not depend on it, nor on how many batches
    run at once.
    ``image_embeds``: optional ``(N, D)`` IP-Adapter image embeddings, one per image (see
    :func:`encode_images`); the unconditional branch of CFG gets zeros, as diffusers does for images.
    Other ``pipe_kwargs`` go to the pipeline call as they are."""
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    _check(prompts, seeds, image_embeds, batch_size)
    if not prompts:
        return np.zeros((0, 0, 0, 3), np.uint8)
    device = pipe.device
    block = row_block(device)
    pipe.set_progress_bar_config(disable=True)  # one bar over batches instead of one per denoising loop
    batch_size = _batch_size(len(prompts), batch_size, device)
    starts = list(range(0, len(prompts), batch_size))
    bar = tqdm(total=len(starts), desc="generate", disable=not progress or len(starts) < 2)

    def run(pipe, chunk):
        out = []
        for i in chunk:
            sl = slice(i, i + batch_size)
            n = len(prompts[sl])
            rows = _padded(n, block)
            gens = [torch.Generator(device="cpu").manual_seed(s) for s in _pad_list(seeds[sl], rows)]
            kwargs = dict(pipe_kwargs)
            per_image = None
            if image_embeds is not None:
                emb = image_embeds[sl].to(device=device, dtype=pipe.unet.dtype)
                emb = torch.cat([emb, emb[-1:].expand(rows - n, -1)])[:, None]
                per_image = [torch.cat([torch.zeros_like(emb), emb]) if guidance > 1 else emb]
                kwargs["ip_adapter_image_embeds"] = per_image
            neg = None if negative_prompt is None else [negative_prompt] * rows
            with torch.no_grad(), _per_image_ip_embeds(pipe, per_image):
                latents = pipe(_pad_list(prompts[sl], rows), num_inference_steps=steps, guidance_scale=guidance,
                               negative_prompt=neg, generator=gens, output_type="latent", **kwargs).images[:n]
            out.append(decode(pipe, latents))
            bar.update(1)
        return out

    try:
        return np.concatenate([x for part in _in_parallel(pipe, starts, run) for x in part])
    finally:
        bar.close()


# --- batches sampled at once, one thread each: the CPU's cores without torch's intra-op threads ---------------

SAMPLE_WORKERS_ENV = "ERASURE_BOOK_SAMPLE_WORKERS"
MAX_SAMPLE_WORKERS = 4


def sample_workers(device=None) -> int:
    """How many batches :func:`generate` and :func:`denoise` run at once, each in its own thread on its own
    shallow copy of the pipeline (the same modules, its own scheduler and tokenizer): ``$ERASURE_BOOK_SAMPLE_WORKERS``
    if set; on the CPU, the cores this process may use, at most :data:`MAX_SAMPLE_WORKERS`; 1 on an accelerator.
    While more than one thread runs, torch runs one intra-op thread (:func:`one_torch_thread`), whatever its
    setting, so the cores are never oversubscribed; torch releases the GIL inside its kernels, so on 2 cores two
    batches of one torch thread each sample faster than one batch on torch's 2 threads
    (``results/benchmarks/generation_ceiling.csv`` measures both). The images are the same bits (each batch is
    seeded and padded on its own: the module docstring)."""
    workers = _env_count(SAMPLE_WORKERS_ENV)
    if workers is not None:
        return workers
    if device is not None and torch.device(device).type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_SAMPLE_WORKERS, cores))


@contextmanager
def one_torch_thread(workers: int):
    """Inside the block, torch runs one intra-op thread when ``workers`` > 1 threads share the cores (its setting
    restored after, also on an error); with one worker, nothing changes. Threads started inside the block inherit
    the setting. torch's thread count is the process's: two threads of the caller that enter the block at once may
    restore each other's setting early, which costs speed, never a result."""
    before = torch.get_num_threads()
    if workers > 1 and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _batch_size(n: int, batch_size: int, device) -> int:
    """The batch of ``n`` images on ``device``: ``batch_size`` rounded up to a whole number of :func:`row_block`
    rows, or less when fewer batches than :func:`sample_workers` would leave a thread idle (the smallest whole
    number of blocks that gives every thread a batch, never below one block). The batch is lowered only on the CPU
    with row blocks (a block > 1), where an image does not depend on its batch (the module docstring); elsewhere
    (a GPU, ``$ERASURE_BOOK_ROW_BLOCK=1``) it is the caller's."""
    block = row_block(device)
    batch_size = _padded(batch_size, block)
    if block <= 1 or (device is not None and torch.device(device).type != "cpu"):
        return batch_size
    workers = sample_workers(device)
    if workers <= 1 or -(-n // batch_size) >= workers:
        return batch_size
    return min(batch_size, max(block, _padded(-(-n // workers), block)))


def _shell(pipe):
    """A pipeline of ``pipe``'s modules (shared, so an applied edit is seen) with its own scheduler and tokenizer,
    for one sampling thread (a diffusers pipeline keeps per-call state on itself and its scheduler)."""
    import copy
    import inspect
    components = dict(pipe.components)
    for name in ("scheduler", "tokenizer"):
        if components.get(name) is not None:
            components[name] = copy.deepcopy(components[name])
    extra = {"requires_safety_checker": False} if "requires_safety_checker" in inspect.signature(
        type(pipe).__init__).parameters else {}
    shell = type(pipe)(**components, **extra)
    shell.set_progress_bar_config(disable=True)
    return shell


def _in_parallel(pipe, starts: list, run) -> list:
    """``run(pipeline, chunk)`` over the batch starts ``starts``, split into contiguous chunks of whole batches,
    one per :func:`sample_workers` thread (one chunk on the caller's thread when there is one worker); the
    chunks' results in order. Grad mode is per thread in torch: every thread runs as the caller's."""
    workers = min(sample_workers(pipe.device), len(starts))
    if workers <= 1:
        return [run(pipe, starts)]
    size = -(-len(starts) // workers)
    chunks = [starts[i:i + size] for i in range(0, len(starts), size)]
    grad = torch.is_grad_enabled()

    def task(shell, chunk):
        with torch.set_grad_enabled(grad):
            return run(shell, chunk)

    from concurrent.futures import ThreadPoolExecutor
    shells = [_shell(pipe) for _ in chunks]
    with one_torch_thread(len(chunks)), ThreadPoolExecutor(len(chunks), thread_name_prefix="sample") as pool:
        futures = [pool.submit(task, shell, chunk) for shell, chunk in zip(shells, chunks)]
        return [f.result() for f in futures]


@contextmanager
def _per_image_ip_embeds(pipe, embeds):
    """Make the pipeline use ``embeds`` (one IP-Adapter embedding per image, [uncond; cond] under CFG) as is.

    diffusers' ``StableDiffusionPipeline`` expects one reference image for the whole batch: it repeats the
    given ``ip_adapter_image_embeds`` ``batch_size`` times. With one embedding per image that gives
    ``batch_size**2`` rows, and the IP attention then reshapes them so that every image attends to the
    image tokens of *all* images of the batch (a blend of every reference, not an error). Here the
    pipeline's preparation step is bypassed for the duration of one call."""
    if embeds is None:
        yield
        return
    pipe.prepare_ip_adapter_image_embeds = lambda *args, **kwargs: embeds
    try:
        yield
    finally:
        del pipe.prepare_ip_adapter_image_embeds  # back to the class's method


@torch.no_grad()
def encode_images(pipe, images: np.ndarray) -> torch.Tensor:
    """IP-Adapter image embeddings ``(N, D)`` of uint8 images ``(N, H, W, 3)`` with the pipeline's own
    feature extractor and image encoder (load an IP-Adapter first)."""
    if getattr(pipe, "image_encoder", None) is None:
        raise ValueError("the pipeline has no image encoder: load an IP-Adapter first (pipe.load_ip_adapter)")
    pixels = pipe.feature_extractor(list(images), return_tensors="pt").pixel_values
    pixels = pixels.to(device=pipe.device, dtype=pipe.image_encoder.dtype)
    return pipe.image_encoder(pixels).image_embeds


# --- partial trajectories ------------------------------------------------------------------------------------

@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder hidden states ``(N, 77, D)`` of ``prompts`` (what the UNet's cross-attention reads)."""
    states, _ = pipe.encode_prompt(list(prompts), pipe.device, 1, False)
    return states


def initial_latents(pipe, seeds: Sequence[int]) -> torch.Tensor:
    """``x_T`` of each seed, exactly as :func:`generate` draws it: ``(N, C, h, w)`` on the pipeline's device."""
    seeds = [int(s) for s in seeds]
    gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    size = pipe.unet.config.sample_size
    return pipe.prepare_latents(len(seeds), pipe.unet.config.in_channels, size * pipe.vae_scale_factor,
                                size * pipe.vae_scale_factor, pipe.unet.dtype, pipe.device, gens)


def set_steps(pipe, steps: int) -> torch.Tensor:
    """Set the scheduler to ``steps`` DDIM steps; returns its timesteps, from T downward."""
    pipe.scheduler.set_timesteps(steps, device=pipe.device)
    return pipe.scheduler.timesteps


@dataclass
class Trajectory:
    """What :func:`denoise` recorded, for ``S`` steps of ``N`` images.

    ``timesteps (S,)``: the UNet timestep of each step; ``latents (N, S + 1, C, h, w)``: the latent entering
    each step, then the final one; ``noise_cond``/``noise_uncond (N, S, C, h, w)``: the noise predictions of
    each step (``noise_uncond`` is None without CFG). All on the CPU, float32."""

    timesteps: torch.Tensor
    latents: torch.Tensor
    noise_cond: torch.Tensor
    noise_uncond: torch.Tensor | None

    def guided(self, guidance: float) -> torch.Tensor:
        """The CFG noise prediction of every step at ``guidance``: ``(N, S, C, h, w)``."""
        if self.noise_uncond is None:
            return self.noise_cond
        return self.noise_uncond + guidance * (self.noise_cond - self.noise_uncond)


def _unet_rows(unet, latents, t, states, added=None):
    """UNet on a whole number of :func:`row_block` rows (padding with the last row), cut back to ``len``."""
    n = len(latents)
    rows = _padded(n, row_block(latents.device))
    if rows != n:
        pad = lambda x: torch.cat([x, x[-1:].expand(rows - n, *x.shape[1:])])  # noqa: E731
        latents, states = pad(latents), pad(states)
        t = pad(t) if t.ndim else t
        if added is not None:
            added = {"image_embeds": [pad(e) for e in added["image_embeds"]]}
    return unet(latents, t, encoder_hidden_states=states, added_cond_kwargs=added).sample[:n]


@torch.no_grad()
def denoise(pipe, prompts: Sequence[str], latents: torch.Tensor, steps: int = 50, guidance: float = 5.0,
            start: int = 0, stop: int | None = None, negative_prompt: str | None = None,
            image_embeds: torch.Tensor | None = None, record: bool = False, batch_size: int = 32,
            progress: bool = False):
    """Run DDIM steps ``[start, stop)`` of a ``steps``-step schedule from ``latents`` (the latents *entering*
    step ``start``, e.g. :func:`initial_latents` for ``start=0``).

    Returns the latents after step ``stop - 1`` ``(N, C, h, w)``, or with ``record=True`` a
    :class:`Trajectory` of the steps run. ``image_embeds (N, D)`` adds IP-Adapter image tokens (zeros in the
    unconditional branch). Any ``guidance`` works, including 1 (no CFG: one UNet call per step) and the
    negative guidance of ESD-style targets (< 0)."""
    prompts = list(prompts)
    if len(latents) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(latents)} latents")
    _check(prompts, latents, image_embeds, batch_size)
    stop = steps if stop is None else stop
    if not 0 <= start <= stop <= steps:
        raise ValueError(f"need 0 <= start <= stop <= steps, got start={start}, stop={stop}, steps={steps}")
    use_cfg = guidance != 1.0
    timesteps = set_steps(pipe, steps)[start:stop]
    device, dtype = pipe.device, pipe.unet.dtype
    batch_size = _batch_size(len(prompts), batch_size, device)

    def run(pipe, chunk):
        done = []
        for i in tqdm(chunk, desc="denoise", disable=not progress):
            sl = slice(i, i + batch_size)
            n = len(prompts[sl])
            cond, uncond = pipe.encode_prompt(prompts[sl], device, 1, use_cfg,
                                              None if negative_prompt is None else [negative_prompt] * n)
            states = torch.cat([uncond, cond]) if use_cfg else cond
            added = None
            if image_embeds is not None:
                emb = image_embeds[sl].to(device=device, dtype=dtype)[:, None]
                added = {"image_embeds": [torch.cat([torch.zeros_like(emb), emb]) if use_cfg else emb]}
            z = latents[sl].to(device=device, dtype=dtype)
            lat, pc, pu = [z.float().cpu()], [], []
            for t in timesteps:
                inp = torch.cat([z, z]) if use_cfg else z
                eps = _unet_rows(pipe.unet, pipe.scheduler.scale_model_input(inp, t), t, states, added)
                if use_cfg:
                    e_u, e_c = eps.chunk(2)
                    eps = e_u + guidance * (e_c - e_u)
                else:
                    e_u, e_c = None, eps
                z = pipe.scheduler.step(eps, t, z).prev_sample
                if record:
                    lat.append(z.float().cpu())
                    pc.append(e_c.float().cpu())
                    if e_u is not None:
                        pu.append(e_u.float().cpu())
            record_of = None
            if record:
                stack = lambda xs: torch.stack(xs, 1) if xs else torch.zeros(n, 0, *z.shape[1:])  # noqa: E731
                record_of = (stack(lat), stack(pc), stack(pu) if use_cfg else None)
            done.append((z, record_of))
        return done

    # the shells copy the scheduler as set_steps left it (its timesteps)
    batches = [b for part in _in_parallel(pipe, list(range(0, len(prompts), batch_size)), run) for b in part]
    finals, records = [z for z, _ in batches], [r for _, r in batches]
    if not record:
        return torch.cat(finals)
    return Trajectory(timesteps=timesteps.cpu(), latents=torch.cat([r[0] for r in records]),
                      noise_cond=torch.cat([r[1] for r in records]),
                      noise_uncond=torch.cat([r[2] for r in records]) if use_cfg else None)


def latents_at(pipe, prompts: Sequence[str], seeds: Sequence[int], index: int, steps: int = 50,
               guidance: float = 3.0, **kwargs) -> tuple[torch.Tensor, int]:
    """``x_t`` after the first ``index`` DDIM steps (of ``steps``) from each seed's ``x_T`` with ``guidance``:
    ESD's and Co-Erasing's partial sampling. Returns ``(latents (N, C, h, w), t)`` where ``t`` is the UNet
    timestep at which those latents are next denoised (``timesteps[index]``; ``index < steps``)."""
    if not 0 <= index < steps:
        raise ValueError(f"index must be in [0, {steps}), got {index}")
    z = denoise(pipe, prompts, initial_latents(pipe, seeds), steps=steps, guidance=guidance, start=0, stop=index,
                **kwargs)
    return z, int(set_steps(pipe, steps)[index])


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> np.ndarray:
    """VAE-decode latents to uint8 images ``(N, H, W, 3)``, in blocks of :func:`row_block` (on the CPU the VAE
    too rounds differently for different batch sizes; elsewhere the block is 1 unless configured)."""
    if torch.isnan(latents).any():
        raise FloatingPointError("NaN latents (fp16 overflow on CPU?): cannot decode")
    out = []
    block = row_block(pipe.vae.device)
    step = block if block > 1 else 8  # without padding: plain blocks of 8 images
    for i in range(0, len(latents), step):
        z = latents[i:i + step]
        n = len(z)
        if block > 1:
            z = torch.cat([z, z[-1:].expand(block - n, *z.shape[1:])])
        x = pipe.vae.decode(z.to(device=pipe.vae.device, dtype=pipe.vae.dtype)
                            / pipe.vae.config.scaling_factor).sample[:n]
        out.append(((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


__all__ = ["MAX_SAMPLE_WORKERS", "ROW_BLOCK", "ROW_BLOCK_ENV", "SAMPLE_WORKERS_ENV", "Trajectory", "decode", "denoise",
           "encode_images", "encode_prompts", "generate", "initial_latents", "latents_at", "row_block",
           "one_torch_thread", "sample_workers", "set_steps"]
