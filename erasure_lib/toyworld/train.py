"""Train the toy model zoo from scratch: ``python -m erasure_lib.toyworld.train --out data``.

Parts, in dependency order (``--part`` picks some; each skips if its output exists, unless ``--force``):

``data``        render the training set (40k scenes, 4 captions each) and train the tokenizer
``clip``        toy CLIP, contrastive (text + vision towers)
``vae``         AutoencoderKL, f=4
``vae_decoder`` the VAE's decoder fine-tuned with the encoder frozen (latents unchanged, like SD's ft-MSE VAE)
``classifier``  the concept classifiers and the FID feature extractor
``unet``        UNet2DConditionModel on VAE latents, conditioned on the *frozen* toy CLIP text tower
``assemble``    TinySD as one ``StableDiffusionPipeline`` folder
``ip_adapter``  a toy IP-Adapter (image projection + ``to_k_ip``/``to_v_ip``) on the frozen TinySD

Every loop is seeded (the batch of step ``k`` depends only on the seed and ``k``), shows a tqdm bar, logs
its loss to ``<runs>/<part>/log.csv`` and checkpoints atomically every few hundred steps, so an interrupted
run resumes where it stopped and gives the same weights as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .._io import atomic_path, atomic_write_text
from . import models, zoo
from .captions import prompt_set, recaption, sample_training_pairs, write_prompt_csv
from .render import render_batch
from .tokenizer import train_tokenizer
from .world import scene_labels

PARTS = ("data", "clip", "vae", "vae_decoder", "classifier", "unet", "assemble", "ip_adapter")
N_TRAIN = 40_000
N_CAPTIONS = 4

# Steps and batch sizes of the committed run (the notebook plots their logs).
CONFIG = {
    "clip": dict(steps=2000, batch=128, lr=1e-3, warmup=200),
    "vae": dict(steps=2000, batch=32, lr=1e-3, warmup=100),
    "vae_decoder": dict(steps=6000, batch=32, lr=1e-3, warmup=100),
    "classifier": dict(steps=1500, batch=96, lr=2e-3, warmup=100),
    "unet": dict(steps=5000, batch=64, lr=5e-4, warmup=200, ema=0.999, uncond_p=0.1),
    "ip_adapter": dict(steps=1500, batch=64, lr=1e-3, warmup=100, text_drop_p=0.5),
}


# --- shared machinery ----------------------------------------------------------------------------------------

def _atomic_torch_save(obj, path: Path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _atomic_json(obj, path: Path):
    atomic_write_text(path, json.dumps(obj, indent=2))


def _cosine(warmup: int, steps: int):
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))


def train_loop(part: str, run_dir: Path, modules: dict, params, cfg: dict, step_fn, seed: int,
               ema_module=None, ckpt_every: int = 250):
    """Generic resumable loop. ``step_fn(step, generator) -> dict of scalar tensors`` (``loss`` is minimised)."""
    d = run_dir / part
    d.mkdir(parents=True, exist_ok=True)
    params = list(params)
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(cfg["warmup"], cfg["steps"]))
    ema = None
    if ema_module is not None:
        ema = {k: v.detach().clone() for k, v in ema_module.state_dict().items()}
    start, elapsed = 0, 0.0
    ckpt = d / "ckpt.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        for name, m in modules.items():
            m.load_state_dict(state["modules"][name])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        if ema is not None:
            ema = state["ema"]
        start, elapsed = state["step"], state["elapsed"]
        print(f"[{part}] resuming at step {start}")
    log = open(d / "log.csv", "a", newline="")
    writer = csv.writer(log)
    if start == 0:
        log.truncate(0)
        writer.writerow(["step", "loss", "lr", "seconds"])

    def save(step):
        _atomic_torch_save({"modules": {n: m.state_dict() for n, m in modules.items()}, "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "ema": ema, "step": step, "elapsed": elapsed}, ckpt)

    bar = tqdm(range(start, cfg["steps"]), desc=part, initial=start, total=cfg["steps"], mininterval=5)
    t0 = time.time()
    for step in bar:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        for m in modules.values():
            m.train()
        out = step_fn(step, gen)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"[{part}] loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                decay = min(cfg["ema"], (1 + step) / (10 + step))
                for k, v in ema_module.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                    else:
                        ema[k].copy_(v)
        if step % 25 == 0 or step == cfg["steps"] - 1:
            writer.writerow([step, f"{loss.item():.6f}", f"{sched.get_last_lr()[0]:.3g}",
                             f"{elapsed + time.time() - t0:.1f}"])
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % ckpt_every == 0:
            elapsed += time.time() - t0
            t0 = time.time()
            log.flush()
            save(step + 1)
    elapsed += time.time() - t0
    save(cfg["steps"])
    log.close()
    if ema is not None:
        ema_module.load_state_dict(ema)
    for m in modules.values():
        m.eval()
    _atomic_json({"part": part, "steps": cfg["steps"], "seconds": round(elapsed, 1), "config": cfg},
                 d / "summary.json")
    return elapsed


# --- data --------------------------------------------------------------------------------------------------

def build_data(run_dir: Path, out: Path, seed: int):
    run_dir.mkdir(parents=True, exist_ok=True)
    scenes, caps = sample_training_pairs(N_TRAIN, seed)
    captions = [caps] + [recaption(scenes, seed + 1 + k) for k in range(N_CAPTIONS - 1)]
    images = (render_batch(scenes, seeds=range(N_TRAIN)) * 255).round().astype(np.uint8)
    labels = {k: np.array([scene_labels(s)[k] for s in scenes]) for k in ("object", "style", "sensitive", "colour")}
    tok = train_tokenizer([c for cs in captions for c in cs] + list(prompt_set().prompt))
    tok.save_pretrained(out / "toy_clip")
    write_prompt_csv(out / "prompts" / "toy_heldout.csv")
    ids = np.stack([np.array(tok(cs, padding="max_length", max_length=models.MAX_LENGTH,
                                 truncation=True).input_ids, dtype=np.int16) for cs in captions], axis=1)
    with atomic_path(run_dir / "dataset.npz", suffix=".npz") as tmp:
        np.savez(tmp, images=images, ids=ids, **labels)
    (run_dir / "captions.json").write_text(json.dumps(captions))


def load_data(run_dir: Path):
    d = np.load(run_dir / "dataset.npz")
    return {k: torch.from_numpy(d[k].astype(np.int64) if d[k].dtype == np.int16 else d[k]) for k in d.files}


def _pixels(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.permute(0, 3, 1, 2).float() / 255.0


def _clip_pixels(x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(models.IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGE_STD).view(1, 3, 1, 1)
    return (x01 - mean) / std


def _pick_ids(data, idx, gen):
    """One of the scene's captions per image, as token ids ``(B, 77)``."""
    which = torch.randint(N_CAPTIONS, (len(idx),), generator=gen)
    return data["ids"][idx, which]


def _noised(z0, alphas_cumprod, gen):
    """DDPM forward process at uniformly drawn timesteps: returns (z_t, t, the noise to predict)."""
    noise = torch.randn(z0.shape, generator=gen)
    t = torch.randint(0, len(alphas_cumprod), (len(z0),), generator=gen)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    return a.sqrt() * z0 + (1 - a).sqrt() * noise, t, noise


def unet_step(unet, text_encoder, latents, ids, uncond, cfg: dict, alphas_cumprod):
    """The step of :func:`train_loop` that trains a text-conditioned UNet (TinySD's, and chapter 40's second one):
    ``cfg["batch"]`` random scenes of ``latents`` (``(N, 4, 8, 8)``), one of each scene's captions ``ids``
    (``(N, n_captions, 77)``), ``uncond`` (the empty caption's ids) in place of a caption with probability
    ``cfg["uncond_p"]``, the frozen text tower's states, epsilon-MSE at a uniform timestep."""
    n, n_captions = ids.shape[:2]

    def step(k, gen):
        idx = torch.randint(n, (cfg["batch"],), generator=gen)
        batch_ids = ids[idx, torch.randint(n_captions, (len(idx),), generator=gen)]
        drop = torch.rand(len(idx), generator=gen) < cfg["uncond_p"]
        batch_ids[drop] = uncond
        with torch.no_grad():
            states = text_encoder(batch_ids)[0]
        zt, t, noise = _noised(latents[idx], alphas_cumprod, gen)
        return {"loss": F.mse_loss(unet(zt, t, encoder_hidden_states=states).sample, noise)}

    return step


# --- parts --------------------------------------------------------------------------------------------------

def train_clip(run_dir: Path, out: Path, seed: int, text_width: int = models.TEXT_WIDTH):
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(out / "toy_clip")
    data = load_data(run_dir)
    torch.manual_seed(seed)
    clip = models.build_clip(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, text_width)
    cfg = CONFIG["clip"]

    def step(k, gen):
        idx = torch.randint(N_TRAIN, (cfg["batch"],), generator=gen)
        ids = _pick_ids(data, idx, gen)
        # causal encoder: positions after the first [EoT] cannot change it, so trim the padding for speed
        length = int((ids != tok.eos_token_id).sum(1).max()) + 1
        ids = ids[:, :length]
        pix = _clip_pixels(_pixels(data["images"][idx]))
        out_ = clip(input_ids=ids, pixel_values=pix)
        logits = out_.logits_per_text
        # identical captions are not negatives of each other: soft targets over equal rows
        same = (ids[:, None, :] == ids[None, :, :]).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                      + torch.sum(-target.T * logits.T.log_softmax(1), 1).mean())
        return {"loss": loss}

    train_loop("clip", run_dir, {"clip": clip}, clip.parameters(), cfg, step, seed)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=list(models.IMAGE_MEAN),
        image_std=list(models.IMAGE_STD)), tokenizer=tok)
    clip.save_pretrained(out / "toy_clip")
    proc.save_pretrained(out / "toy_clip")


def train_vae(run_dir: Path, out: Path, seed: int):
    data = load_data(run_dir)
    torch.manual_seed(seed)
    vae = models.build_vae()
    cfg = CONFIG["vae"]

    def step(k, gen):
        idx = torch.randint(N_TRAIN, (cfg["batch"],), generator=gen)
        x = _pixels(data["images"][idx]) * 2 - 1
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = post.kl().mean()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-6 * kl
        return {"loss": loss}

    train_loop("vae", run_dir, {"vae": vae}, vae.parameters(), cfg, step, seed)
    # SD's scaling_factor: scale latents to unit variance for the UNet
    with torch.no_grad():
        x = _pixels(data["images"][:2048]) * 2 - 1
        z = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mean for i in range(0, len(x), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    vae.save_pretrained(run_dir / "vae" / "final")


def train_vae_decoder(run_dir: Path, out: Path, seed: int):
    """Fine-tune decoder and post_quant_conv only: the encoder, and so every latent the UNet learns from,
    stays as it is (SD's ft-MSE VAEs were made the same way)."""
    from diffusers import AutoencoderKL
    data = load_data(run_dir)
    vae = AutoencoderKL.from_pretrained(run_dir / "vae" / "final")
    vae.requires_grad_(False)
    trainable = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in trainable:
        p.requires_grad_(True)
    cfg = CONFIG["vae_decoder"]

    def step(k, gen):
        idx = torch.randint(N_TRAIN, (cfg["batch"],), generator=gen)
        x = _pixels(data["images"][idx]) * 2 - 1
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        return {"loss": F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)}

    holder = torch.nn.ModuleDict({"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv})
    train_loop("vae_decoder", run_dir, {"dec": holder}, trainable, cfg, step, seed)
    vae.save_pretrained(run_dir / "vae_decoder" / "final")


def _augment(x, gen):
    """Generation artefacts the classifier must not mind: noise, blur, slight colour shifts."""
    b = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    w = (torch.rand(b, 1, 1, 1, generator=gen) * 0.6) * (torch.rand(b, 1, 1, 1, generator=gen) < 0.5)
    x = (1 - w) * x + w * blur
    x = x * (1 + 0.08 * (torch.rand(b, 3, 1, 1, generator=gen) - 0.5))
    x = x + torch.rand(b, 1, 1, 1, generator=gen) * 0.05 * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


def train_classifier(run_dir: Path, out: Path, seed: int):
    data = load_data(run_dir)
    torch.manual_seed(seed)
    clf = models.ToyConceptClassifier()
    cfg = CONFIG["classifier"]

    def step(k, gen):
        idx = torch.randint(N_TRAIN, (cfg["batch"],), generator=gen)
        x = _augment(_pixels(data["images"][idx]), gen)
        logits = clf(x)
        loss = sum(F.cross_entropy(logits[h], data[h][idx], ignore_index=-1) for h in logits)
        return {"loss": loss}

    train_loop("classifier", run_dir, {"clf": clf}, clf.parameters(), cfg, step, seed)
    clf.save_pretrained(out / "classifier")
    fid = models.ToyFIDFeatures(channels=tuple(clf.config.channels))
    fid.trunk.load_state_dict(clf.trunk.state_dict())
    fid.save_pretrained(out / "fid_features")


def train_unet(run_dir: Path, out: Path, seed: int):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer
    data = load_data(run_dir)
    tok = CLIPTokenizer.from_pretrained(out / "toy_clip")
    text_encoder = CLIPTextModel.from_pretrained(out / "toy_clip").eval().requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(run_dir / "vae" / "final").eval().requires_grad_(False)
    latents_path = run_dir / "unet" / "latents.pt"
    latents_path.parent.mkdir(parents=True, exist_ok=True)
    if latents_path.exists():
        latents = torch.load(latents_path, weights_only=True)
    else:
        with torch.no_grad():
            latents = torch.cat([vae.encode(_pixels(data["images"][i:i + 500]) * 2 - 1).latent_dist.mean
                                 for i in tqdm(range(0, N_TRAIN, 500), desc="encode latents")])
        latents = latents * vae.config.scaling_factor
        _atomic_torch_save(latents, latents_path)
    uncond = tok([""], padding="max_length", max_length=models.MAX_LENGTH).input_ids[0]
    torch.manual_seed(seed)
    unet = models.build_unet(cross_attention_dim=text_encoder.config.hidden_size)  # the text tower's width
    cfg = CONFIG["unet"]
    alphas = models.build_train_scheduler().alphas_cumprod

    step = unet_step(unet, text_encoder, latents, data["ids"], torch.tensor(uncond), cfg, alphas)
    train_loop("unet", run_dir, {"unet": unet}, unet.parameters(), cfg, step, seed, ema_module=unet,
               ckpt_every=200)
    unet.save_pretrained(run_dir / "unet" / "final")


def assemble(run_dir: Path, out: Path, seed: int):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(run_dir / "vae_decoder" / "final"),
        text_encoder=CLIPTextModel.from_pretrained(out / "toy_clip"),
        tokenizer=CLIPTokenizer.from_pretrained(out / "toy_clip"),
        unet=UNet2DConditionModel.from_pretrained(run_dir / "unet" / "final"),
        scheduler=models.build_sample_scheduler(),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    tmp = out / "tinysd.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    shutil.rmtree(out / "tinysd", ignore_errors=True)
    os.replace(tmp, out / "tinysd")


def train_ip_adapter(run_dir: Path, out: Path, seed: int):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPVisionModelWithProjection
    data = load_data(run_dir)
    pipe = StableDiffusionPipeline.from_pretrained(out / "tinysd", local_files_only=True)
    clip = CLIPModel.from_pretrained(out / "toy_clip").eval()
    encoder = CLIPVisionModelWithProjection(clip.config.vision_config)
    encoder.vision_model.load_state_dict(clip.vision_model.state_dict())
    encoder.visual_projection.load_state_dict(clip.visual_projection.state_dict())
    encoder.eval().requires_grad_(False)
    with torch.no_grad():
        embeds = torch.cat([encoder(_clip_pixels(_pixels(data["images"][i:i + 500]))).image_embeds
                            for i in tqdm(range(0, N_TRAIN, 500), desc="image embeds")])
    latents = torch.load(run_dir / "unet" / "latents.pt", weights_only=True)
    unet, text_encoder = pipe.unet.requires_grad_(False), pipe.text_encoder.requires_grad_(False)
    torch.manual_seed(seed)
    d, d_image = unet.config.cross_attention_dim, encoder.config.projection_dim  # 4 image tokens of the text width
    init = {"image_proj": {"proj.weight": torch.randn(4 * d, d_image) * 0.02, "proj.bias": torch.zeros(4 * d),
                           "norm.weight": torch.ones(d), "norm.bias": torch.zeros(d)},
            "ip_adapter": {}}
    n_cross = sum(1 for n in unet.attn_processors if n.endswith("attn2.processor"))
    cross = [m for n, m in unet.named_modules() if n.endswith("attn2")]
    for i, attn in zip(range(n_cross), cross):
        # start from the text keys/values: image tokens begin where text tokens are understood
        init["ip_adapter"][f"{2 * i + 1}.to_k_ip.weight"] = attn.to_k.weight.detach().clone()
        init["ip_adapter"][f"{2 * i + 1}.to_v_ip.weight"] = attn.to_v.weight.detach().clone()
    unet._load_ip_adapter_weights([init])
    trainable = list(unet.encoder_hid_proj.parameters())
    for proc in unet.attn_processors.values():
        if hasattr(proc, "to_k_ip"):
            trainable += list(proc.parameters())
    for p in trainable:
        p.requires_grad_(True)
    tok = pipe.tokenizer
    uncond = torch.tensor(tok([""], padding="max_length", max_length=models.MAX_LENGTH).input_ids[0])
    alphas = models.build_train_scheduler().alphas_cumprod
    cfg = CONFIG["ip_adapter"]

    def step(k, gen):
        idx = torch.randint(N_TRAIN, (cfg["batch"],), generator=gen)
        ids = _pick_ids(data, idx, gen)
        ids[torch.rand(len(idx), generator=gen) < cfg["text_drop_p"]] = uncond
        img = embeds[idx].clone()
        img[torch.rand(len(idx), generator=gen) < 0.05] = 0.0
        with torch.no_grad():
            states = text_encoder(ids)[0]
        zt, t, noise = _noised(latents[idx], alphas, gen)
        pred = unet(zt, t, encoder_hidden_states=states, added_cond_kwargs={"image_embeds": [img[:, None]]}).sample
        return {"loss": F.mse_loss(pred, noise)}

    holder = torch.nn.ModuleDict({"proj": unet.encoder_hid_proj,
                                  "procs": torch.nn.ModuleList([p for p in unet.attn_processors.values()
                                                                if hasattr(p, "to_k_ip")])})
    train_loop("ip_adapter", run_dir, {"ip": holder}, trainable, cfg, step, seed)
    export_ip_adapter(unet, encoder, out / "ip_adapter")


def export_ip_adapter(unet, image_encoder, folder: Path):
    """Write the weights in the layout ``pipe.load_ip_adapter(folder, subfolder="", weight_name=...)`` reads."""
    proj = unet.encoder_hid_proj.image_projection_layers[0]
    tensors = {"image_proj.proj.weight": proj.image_embeds.weight, "image_proj.proj.bias": proj.image_embeds.bias,
               "image_proj.norm.weight": proj.norm.weight, "image_proj.norm.bias": proj.norm.bias}
    # diffusers numbers the cross-attention processors 1, 3, 5, ... (the even ids were SD's self-attentions)
    ip_procs = [p for p in unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    for i, proc in enumerate(ip_procs):
        tensors[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = proc.to_k_ip[0].weight
        tensors[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = proc.to_v_ip[0].weight
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()},
              str(folder / "ip-adapter_toy.safetensors"))
    image_encoder.save_pretrained(folder / "image_encoder")


_FUNCS = {"data": build_data, "clip": train_clip, "vae": train_vae, "vae_decoder": train_vae_decoder,
          "classifier": train_classifier, "unet": train_unet, "assemble": assemble, "ip_adapter": train_ip_adapter}
_OUTPUTS = {"data": "runs:dataset.npz", "clip": "toy_clip/model.safetensors", "vae": "runs:vae/final",
            "vae_decoder": "runs:vae_decoder/final", "classifier": "classifier", "unet": "runs:unet/final",
            "assemble": "tinysd", "ip_adapter": "ip_adapter"}


def _output(part, run_dir, out):
    target = _OUTPUTS[part]
    return run_dir / target[5:] if target.startswith("runs:") else out / target


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("data"), help="where the zoo is written (default: data)")
    ap.add_argument("--runs", type=Path, default=Path("runs/zoo"), help="checkpoints, logs, the training set")
    ap.add_argument("--part", nargs="*", choices=PARTS, default=list(PARTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="retrain parts whose output exists")
    ap.add_argument("--text-width", type=int, default=models.TEXT_WIDTH,
                    help=f"the text tower's width = the UNet's cross-attention width (default {models.TEXT_WIDTH})")
    args = ap.parse_args(argv)
    if args.text_width < 4 or args.text_width % 4:
        ap.error(f"--text-width must be a positive multiple of 4 (its 4 attention heads), got {args.text_width}")
    args.out.mkdir(parents=True, exist_ok=True)
    funcs = {**_FUNCS, "clip": functools.partial(train_clip, text_width=args.text_width)}
    timings = {}
    for part in PARTS:
        if part not in args.part:
            continue
        if _output(part, args.runs, args.out).exists() and not args.force:
            print(f"[{part}] exists, skipped (use --force to retrain)")
            continue
        t = time.time()
        funcs[part](args.runs, args.out, args.seed)
        timings[part] = round(time.time() - t, 1)
        print(f"[{part}] done in {timings[part]} s")
    collect_logs(args.runs, args.out)
    if all((args.out / p).exists() for p in zoo.PARTS):
        zoo.write_manifest(args.out)


def collect_logs(run_dir: Path, out: Path):
    """Copy the training curves and timings next to the weights (the notebook plots them)."""
    dest = out / "training_logs"
    dest.mkdir(parents=True, exist_ok=True)
    for part in CONFIG:
        for name in ("log.csv", "summary.json"):
            src = run_dir / part / name
            if src.exists():
                shutil.copyfile(src, dest / f"{part}_{name}")


if __name__ == "__main__":
    main()
