"""A small text-conditional GAN on the toy-world renders: the ProGAN analog of chapter 40 (NS-Net).

The AI-generated-image detectors of chapter 40 (NS-Net, and UnivFD before it) are trained on images of one GAN,
ProGAN (Karras et al., "Progressive Growing of GANs for Improved Quality, Stability, and Variation", ICLR 2018),
following Wang et al., "CNN-generated images are surprisingly easy to spot... for now" (CVPR 2020), and then
tested on images of other generators, diffusion models among them. On the toy profile TinySD (and the second,
smaller UNet ``aigi_unet``) are the diffusion generators; this module is the GAN: given captions of toy scenes it
draws 32x32 images whose object, colour and style the toy concept classifier recognises.

Architecture (written for this project, not copied from any released code): a small DCGAN-style generator,
conditioned on the pooled output (64-d) of the *frozen* toy CLIP text tower (``data/tinysd/text_encoder``), the same
text features TinySD's UNet reads. The noise ``z`` and an MLP embedding of the caption feature go through a linear
layer to a 4x4 map, then three nearest-neighbour upsample + 3x3 conv blocks (8, 16, 32 px) with ProGAN's pixelwise
feature normalisation and a per-block FiLM modulation by the caption embedding, and a tanh RGB output. The
discriminator (training only; it is not part of the zoo) is a spectrally normalised strided CNN with a
*projection* head (Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018): ``D(x, c) = w . phi(x) +
<V c, phi(x)>``. Loss: hinge; Adam (lr 2e-4, betas (0.0, 0.9)); an exponential moving average of the generator's
weights is what is saved.

Train with ``python -m erasure_lib.toyworld.gan --out data --runs runs/zoo_aigi``: seeded (the batch of step ``k``
depends only on the seed and ``k``), tqdm progress, a CSV loss log, atomic checkpoints and resume. Load with
:func:`load_gan`, sample with :func:`generate` (the noise of image ``i`` comes from ``seeds[i]`` alone, so images
do not depend on the batch size).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from tqdm.auto import tqdm

from .._io import atomic_path, atomic_write_text
from . import zoo

MAX_LENGTH = 77
# Training scenes: a seed other than the zoo's 0, so the GAN's training images are not TinySD's.
TRAIN_SEED = 7
N_TRAIN = 20_000
N_CAPTIONS = 4
CONFIG = dict(steps=2400, batch=64, lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.9), ema=0.999, ckpt_every=250,
              n_train=N_TRAIN, n_captions=N_CAPTIONS, data_seed=TRAIN_SEED)


# --- the networks ----------------------------------------------------------------------------------------------

class _PixelNorm(nn.Module):
    """ProGAN's pixelwise feature vector normalisation (per sample, per position: independent of the batch)."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ToyGANGenerator(ModelMixin, ConfigMixin):
    """``(z, caption feature) -> image`` in [-1, 1], NCHW 32x32. See the module docstring for the architecture."""

    @register_to_config
    def __init__(self, z_dim: int = 64, cond_dim: int = 64, cond_hidden: int = 128,
                 channels: Sequence[int] = (128, 96, 48, 24), out_channels: int = 3):
        super().__init__()
        channels = tuple(channels)
        self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, cond_hidden), nn.LeakyReLU(0.2),
                                      nn.Linear(cond_hidden, cond_hidden), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(z_dim + cond_hidden, 16 * channels[0])
        self.norm = _PixelNorm()
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(channels[:-1], channels[1:]))
        self.films = nn.ModuleList(nn.Linear(cond_hidden, 2 * b) for b in channels[1:])
        for film in self.films:  # start as the identity modulation
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.to_rgb = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        e = self.cond_mlp(cond)
        h = self.fc(torch.cat([z, e], dim=1)).view(len(z), self.config.channels[0], 4, 4)
        h = F.leaky_relu(self.norm(h), 0.2)
        for conv, film in zip(self.convs, self.films):
            h = conv(F.interpolate(h, scale_factor=2, mode="nearest"))
            gamma, beta = film(e)[:, :, None, None].chunk(2, dim=1)
            h = F.leaky_relu(self.norm(h) * (1 + gamma) + beta, 0.2)
        return torch.tanh(self.to_rgb(h))


class ToyGANDiscriminator(nn.Module):
    """Projection discriminator (training only): strided spectrally normalised convs 32 -> 16 -> 8 -> 4, summed
    features ``phi(x)``, ``D(x, c) = w . phi(x) + <V c, phi(x)>``."""

    def __init__(self, cond_dim: int = 64, channels: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        layers = [spectral_norm(nn.Conv2d(3, channels[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for a, b in zip(channels[:-1], channels[1:]):
            layers += [spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)
        self.out = spectral_norm(nn.Linear(channels[-1], 1))
        self.embed = spectral_norm(nn.Linear(cond_dim, channels[-1], bias=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        phi = self.net(x).sum(dim=(2, 3))
        return self.out(phi).squeeze(1) + (self.embed(cond) * phi).sum(1)


# --- text features and sampling -----------------------------------------------------------------------------------

def _check_captions(captions) -> list[str]:
    if isinstance(captions, str):
        raise ValueError("captions must be a list of strings, not one string")
    captions = list(captions)
    if not captions:
        raise ValueError("no captions given")
    bad = [type(c).__name__ for c in captions if not isinstance(c, str)]
    if bad:
        raise ValueError(f"every caption must be a string; got {', '.join(sorted(set(bad)))}")
    return captions


@torch.no_grad()
def caption_features(text_encoder, tokenizer, captions: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """Pooled output (``text_encoder(ids)[1]``, the [EoT] state) of the frozen toy CLIP text tower, ``(N, 64)``.
    Tokenised as TinySD tokenises: padded to ``max_length`` 77."""
    captions = _check_captions(captions)
    out = []
    for i in range(0, len(captions), batch_size):
        ids = tokenizer(captions[i:i + batch_size], padding="max_length", max_length=MAX_LENGTH,
                        truncation=True, return_tensors="pt").input_ids
        out.append(text_encoder(ids.to(text_encoder.device))[1].float().cpu())
    return torch.cat(out)


def _noise(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Generator output (NCHW in [-1, 1]) -> uint8 NHWC."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(generator: ToyGANGenerator, text_encoder, tokenizer, captions: Sequence[str], seeds: Sequence[int],
             batch_size: int = 256) -> np.ndarray:
    """Images of ``captions`` as uint8 ``(N, 32, 32, 3)``; the noise of image ``i`` is drawn from
    ``torch.Generator().manual_seed(seeds[i])``, so an image depends on its caption and seed only."""
    captions = _check_captions(captions)
    seeds = list(seeds)
    if len(seeds) != len(captions):
        raise ValueError(f"got {len(captions)} captions but {len(seeds)} seeds: give one seed per caption")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator.eval()
    out = []
    for i in range(0, len(captions), batch_size):
        cond = caption_features(text_encoder, tokenizer, captions[i:i + batch_size])
        z = _noise(seeds[i:i + batch_size], generator.config.z_dim)
        # one image at a time through the network: CPU kernels may block a batch differently for different batch
        # sizes; per-image calls make the result bit-identical whatever ``batch_size`` is
        imgs = torch.cat([generator(z[j:j + 1].to(generator.device), cond[j:j + 1].to(generator.device))
                          for j in range(len(z))])
        out.append(to_uint8(imgs))
    return np.concatenate(out)


def load_gan(root: Path | None = None) -> ToyGANGenerator:
    """The committed GAN generator (``data/aigi_gan``), checked against the manifest, in eval mode."""
    return ToyGANGenerator.from_pretrained(zoo.verify("aigi_gan", root), local_files_only=True).eval()


def load_text_tower(root: Path | None = None):
    """TinySD's frozen text encoder and tokenizer (the GAN's conditioning), checked against the manifest."""
    from transformers import CLIPTextModel, CLIPTokenizer
    folder = zoo.verify("tinysd", root)
    return (CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True).eval(),
            CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True))


# --- training ---------------------------------------------------------------------------------------------------

def _build_dataset(runs_dir: Path, text_encoder, tokenizer, cfg: dict) -> dict:
    path = runs_dir / "dataset.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    from .captions import recaption, sample_training_pairs
    from .render import render_batch
    scenes, caps = sample_training_pairs(cfg["n_train"], seed=cfg["data_seed"])
    captions = [caps] + [recaption(scenes, cfg["data_seed"] * 1000 + 1 + k) for k in range(cfg["n_captions"] - 1)]
    images = torch.from_numpy((render_batch(scenes, seeds=range(len(scenes))) * 255).round().astype(np.uint8))
    unique = sorted({c for cs in captions for c in cs})
    feats = caption_features(text_encoder, tokenizer, unique)
    index = {c: i for i, c in enumerate(unique)}
    which = torch.tensor([[index[cs[i]] for cs in captions] for i in range(len(scenes))])
    data = {"images": images, "features": feats, "which": which}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(data, tmp)
    return data


def train_gan(out_dir: Path, runs_dir: Path, steps: int | None = None, batch: int | None = None, seed: int = 0,
              root: Path | None = None) -> ToyGANGenerator:
    """Train the GAN, save the EMA generator to ``out_dir`` (``data/aigi_gan``) and its log and summary to
    ``out_dir.parent / "training_logs"``. Resumes from ``runs_dir/ckpt.pt`` when it exists."""
    out_dir, runs_dir = Path(out_dir), Path(runs_dir)
    cfg = dict(CONFIG, seed=seed)
    if steps is not None:
        cfg["steps"] = int(steps)
    if batch is not None:
        cfg["batch"] = int(batch)
    runs_dir.mkdir(parents=True, exist_ok=True)
    text_encoder, tokenizer = load_text_tower(root)
    text_encoder.requires_grad_(False)
    data = _build_dataset(runs_dir, text_encoder, tokenizer, cfg)
    n = len(data["images"])
    real_all = data["images"].permute(0, 3, 1, 2)

    torch.manual_seed(seed)
    G = ToyGANGenerator()
    D = ToyGANDiscriminator(cond_dim=G.config.cond_dim)
    G_ema = ToyGANGenerator(**G.config)
    G_ema.load_state_dict(G.state_dict())
    G_ema.requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg["lr_g"], betas=tuple(cfg["betas"]))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg["lr_d"], betas=tuple(cfg["betas"]))

    ckpt = runs_dir / "ckpt.pt"
    start, elapsed = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        start, elapsed = state["step"], state["elapsed"]
        print(f"[aigi_gan] resuming at step {start}")

    def save(step):
        obj = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(), "opt_g": opt_g.state_dict(),
               "opt_d": opt_d.state_dict(), "step": step, "elapsed": elapsed}
        with atomic_path(ckpt, suffix=".pt") as tmp:
            torch.save(obj, tmp)

    log_path = runs_dir / "log.csv"
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if start == 0:
        log.truncate(0)
        writer.writerow(["step", "loss_d", "loss_g", "d_real", "d_fake", "seconds"])
    B = cfg["batch"]
    bar = tqdm(range(start, cfg["steps"]), desc="aigi_gan", initial=start, total=cfg["steps"], mininterval=5)
    t0 = time.time()
    for step in bar:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(n, (B,), generator=gen)
        which = torch.randint(data["which"].shape[1], (B,), generator=gen)
        cond = data["features"][data["which"][idx, which]]
        real = real_all[idx].float() / 127.5 - 1
        # random horizontal flips (the committed run used them): the GAN may draw a subject mirrored (a fish or gun
        # facing left), which the renderer never does; the classifier still recognises such subjects
        flip = torch.rand(B, generator=gen) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(3), real)
        z = torch.randn(B, G.config.z_dim, generator=gen)
        G.train()
        fake = G(z, cond)
        # discriminator: hinge loss
        d_real, d_fake = D(real, cond), D(fake.detach(), cond)
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator: the same fake batch, through the updated discriminator
        loss_g = -D(fake, cond).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            raise FloatingPointError(f"[aigi_gan] loss is not finite at step {step}")
        with torch.no_grad():
            decay = min(cfg["ema"], (1 + step) / (10 + step))
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.mul_(decay).add_(p.detach(), alpha=1 - decay)
        if step % 25 == 0 or step == cfg["steps"] - 1:
            writer.writerow([step, f"{loss_d.item():.5f}", f"{loss_g.item():.5f}", f"{d_real.mean().item():.4f}",
                             f"{d_fake.mean().item():.4f}", f"{elapsed + time.time() - t0:.1f}"])
            bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}")
        if (step + 1) % cfg["ckpt_every"] == 0:
            elapsed += time.time() - t0
            t0 = time.time()
            log.flush()
            save(step + 1)
    elapsed += time.time() - t0
    if start < cfg["steps"]:
        save(cfg["steps"])
    log.close()
    G_ema.eval()
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    G_ema.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    summary = {"part": "aigi_gan", "steps": cfg["steps"], "seconds": round(elapsed, 1),
               "parameters": sum(p.numel() for p in G_ema.parameters()), "config": cfg}
    atomic_write_text(runs_dir / "summary.json", json.dumps(summary, indent=2))
    logs = out_dir.parent / "training_logs"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(log_path, logs / "aigi_gan_log.csv")
    shutil.copyfile(runs_dir / "summary.json", logs / "aigi_gan_summary.json")
    return G_ema


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("data"), help="the zoo folder; the GAN goes to <out>/aigi_gan")
    ap.add_argument("--runs", type=Path, default=Path("runs/zoo_aigi"), help="checkpoints, log, training set")
    ap.add_argument("--steps", type=int, default=CONFIG["steps"])
    ap.add_argument("--batch", type=int, default=CONFIG["batch"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t = time.time()
    train_gan(args.out / "aigi_gan", args.runs / "aigi_gan", steps=args.steps, batch=args.batch, seed=args.seed,
              root=args.out)
    print(f"[aigi_gan] done in {time.time() - t:.1f} s")


if __name__ == "__main__":
    main()
