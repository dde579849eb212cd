"""A second TinySD UNet, of another size and seed: one of the generators of chapter 40's detection benchmark.

NS-Net (arXiv 2508.01248) and UnivFD (Ojha et al., CVPR 2023) ask whether a detector trained on one or two
generators still separates real from generated images of generators it never saw. On SD-sized models the unseen
generators are other diffusion models (LDM, Glide, SD v1.5, Midjourney); on the toy world this module trains one:
the same latent space (TinySD's frozen VAE), the same frozen toy CLIP text tower reaching the UNet only through
cross-attention (TOYWORLD.md's constraint), but a UNet of half the width (``block_out_channels`` (32, 64) instead of
(64, 128)), its own seed and its own training scenes, trained for fewer steps. ``python -m
erasure_lib.toyworld.second_unet --out data`` writes ``data/aigi_unet`` (about 1 MB of weights) and its training log
under ``data/training_logs``; the loop is :func:`erasure_lib.toyworld.train.train_loop` (seeded, resumable,
checkpointed).

Sampling: :func:`pipeline` returns TinySD with this UNet swapped in, so :func:`erasure_lib.sampling.generate`
draws from it exactly as from TinySD.
"""
from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._io import atomic_path
from . import models, zoo
from .captions import recaption, sample_training_pairs
from .render import render_batch
from .train import _atomic_torch_save, train_loop, unet_step

PART = "aigi_unet"
SEED = 11                 # the zoo's UNet used seed 0 and its own 40k scenes
N_SCENES = 20_000
N_CAPTIONS = 3
CONFIG = dict(steps=3000, batch=64, lr=1e-3, warmup=200, ema=0.998, uncond_p=0.1)
WIDTHS = (32, 64)         # the zoo's UNet: (64, 128)


def build_small_unet(cross_attention_dim: int = models.TEXT_WIDTH):
    """TinySD's UNet layout (cross-attention at 8x8, 4x4 and the mid block) at half the width."""
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=WIDTHS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=16)


def _dataset(run_dir: Path, tinysd: Path, seed: int):
    """Token ids ``(N, N_CAPTIONS, 77)`` and VAE latents (scaled) of ``N_SCENES`` fresh renders, cached."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer
    path = run_dir / "dataset.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    scenes, caps = sample_training_pairs(N_SCENES, seed)
    captions = [caps] + [recaption(scenes, seed + 1 + k) for k in range(N_CAPTIONS - 1)]
    tok = CLIPTokenizer.from_pretrained(tinysd / "tokenizer")
    ids = torch.stack([torch.tensor(tok(cs, padding="max_length", max_length=models.MAX_LENGTH,
                                        truncation=True).input_ids) for cs in captions], dim=1)
    images = render_batch(scenes, seeds=range(10_000_000, 10_000_000 + N_SCENES))
    vae = AutoencoderKL.from_pretrained(tinysd / "vae").eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        latents = torch.cat([vae.encode(x[i:i + 500]).latent_dist.mean
                             for i in tqdm(range(0, len(x), 500), desc="encode latents")])
    data = {"ids": ids, "latents": latents * vae.config.scaling_factor}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save(data, path)
    return data


def train(out: Path, runs: Path, seed: int = SEED, steps: int | None = None) -> Path:
    """Train the second UNet and save it to ``out / aigi_unet``; returns that folder."""
    from transformers import CLIPTextModel, CLIPTokenizer
    tinysd = out / "tinysd"
    run_dir = runs / PART
    data = _dataset(run_dir, tinysd, seed)
    tok = CLIPTokenizer.from_pretrained(tinysd / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(tinysd / "text_encoder").eval().requires_grad_(False)
    uncond = torch.tensor(tok([""], padding="max_length", max_length=models.MAX_LENGTH).input_ids[0])
    torch.manual_seed(seed)
    unet = build_small_unet(text_encoder.config.hidden_size)
    cfg = dict(CONFIG, steps=steps or CONFIG["steps"])
    alphas = models.build_train_scheduler().alphas_cumprod
    step = unet_step(unet, text_encoder, data["latents"], data["ids"], uncond, cfg, alphas)
    train_loop(PART, runs, {"unet": unet}, unet.parameters(), cfg, step, seed, ema_module=unet, ckpt_every=200)
    folder = out / PART
    tmp = out / f"{PART}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    unet.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    logs = out / "training_logs"
    logs.mkdir(exist_ok=True)
    for src, dst in (("log.csv", f"{PART}_log.csv"), ("summary.json", f"{PART}_summary.json")):
        with atomic_path(logs / dst) as t:
            shutil.copyfile(run_dir / src, t)
    return folder


def load_unet(root: Path | None = None):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel.from_pretrained(zoo.verify(PART, root), local_files_only=True).eval()


def pipeline(base_pipe, root: Path | None = None):
    """A shallow copy of the TinySD pipeline ``base_pipe`` with the second UNet in place of its own (the VAE,
    text tower, tokenizer and scheduler are shared: only the denoiser differs)."""
    pipe = copy.copy(base_pipe)
    pipe.register_modules(unet=load_unet(root).to(base_pipe.device))
    pipe.scheduler = copy.deepcopy(base_pipe.scheduler)
    return pipe


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("data"))
    ap.add_argument("--runs", type=Path, default=Path("runs/zoo_aigi"))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    print(train(args.out, args.runs, args.seed, args.steps))


if __name__ == "__main__":
    main()


__all__ = ["build_small_unet", "load_unet", "pipeline", "train"]
