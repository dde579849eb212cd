"""Batched, seeded generation with a diffusers ``StableDiffusionPipeline``.

Each image has its own ``torch.Generator`` seeded with its seed, so the initial latent of (prompt, seed) is
the same whatever batch it lands in; DDIM with eta=0 is deterministic after that.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], steps: int = 25, guidance: float = 5.0,
             negative_prompt: str | None = None, batch_size: int = 32, progress: bool = True,
             image_embeds: torch.Tensor | None = None, **pipe_kwargs) -> np.ndarray:
    """Generate one image per (prompt, seed); returns uint8 ``(N, H, W, 3)``.

    ``image_embeds``: optional ``(N, D)`` IP-Adapter image embeddings, one per image (see
    :func:`encode_images`); the unconditional branch of CFG gets zeros, as diffusers does for images.
    Other ``pipe_kwargs`` go to the pipeline call as they are."""
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if image_embeds is not None and len(image_embeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(image_embeds)} image embeddings")
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    device = pipe.device
    pipe.set_progress_bar_config(disable=True)  # one bar over batches instead of one per denoising loop
    out = []
    starts = range(0, len(prompts), batch_size)
    for i in tqdm(starts, desc="generate", disable=not progress or len(starts) < 2):
        sl = slice(i, i + batch_size)
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds[sl]]
        kwargs = dict(pipe_kwargs)
        if image_embeds is not None:
            emb = image_embeds[sl].to(device=device, dtype=pipe.unet.dtype)[:, None]
            kwargs["ip_adapter_image_embeds"] = [torch.cat([torch.zeros_like(emb), emb]) if guidance > 1 else emb]
        neg = None if negative_prompt is None else [negative_prompt] * len(prompts[sl])
        with torch.no_grad():
            images = pipe(prompts[sl], num_inference_steps=steps, guidance_scale=guidance, negative_prompt=neg,
                          generator=gens, output_type="np", **kwargs).images
        if np.isnan(images).any():
            raise FloatingPointError("the pipeline produced NaN images (fp16 overflow on CPU?)")
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


@torch.no_grad()
def encode_images(pipe, images: np.ndarray) -> torch.Tensor:
    """IP-Adapter image embeddings ``(N, D)`` of uint8 images ``(N, H, W, 3)`` with the pipeline's own
    feature extractor and image encoder (load an IP-Adapter first)."""
    if getattr(pipe, "image_encoder", None) is None:
        raise ValueError("the pipeline has no image encoder: load an IP-Adapter first (pipe.load_ip_adapter)")
    pixels = pipe.feature_extractor(list(images), return_tensors="pt").pixel_values
    pixels = pixels.to(device=pipe.device, dtype=pipe.image_encoder.dtype)
    return pipe.image_encoder(pixels).image_embeds
