"""Benchmark (not a test; needs a CUDA GPU): TICoE's whole-UNet training on SD v1.4's shapes, measured.

    python benchmarks/ticoe_gpu.py --out results/12_ticoe [--width full] [--iterations 10 40]

Builds a random-weight pipeline with SD v1.4's exact structure (:func:`erasure_lib.testing.build_sd14_test_model`,
``width="full"``: the published UNet, VAE and ViT-L/14 text-encoder configs; memory and speed depend on the shapes,
not on the weight values, and the hub is not needed) and trains TICoE on it under each memory setting of
:class:`~erasure_lib.methods.ticoe.TICoEConfig`: the code's (fp32 weights, Adam, no checkpointing), and the fp16
base with autocast and fp32 masters (:meth:`TICoEConfig.sd14`) with Adam or Adafactor, with and without gradient
checkpointing. Per setting: the peak of ``torch.cuda.max_memory_allocated`` over a whole ``erase`` call (the
pipeline's own weights included) and the seconds per training iteration, from the difference of two runs of
different lengths after a warm-up call (setup excluded). Also the seconds per 512-px reference image (50 DDIM steps, CFG 7.5, fp16).

Writes ``gpu_memory_sd14_measured.csv`` and its provenance JSON (GPU name, torch / CUDA versions) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SETTINGS = [  # label, dtype, optimizer, gradient checkpointing
    ("the code's: fp32, Adam, no checkpointing", torch.float32, "adam", False),
    ("fp16 + autocast, Adam, no checkpointing", torch.float16, "adam", False),
    ("fp16 + autocast, Adam, checkpointing (TICoEConfig.sd14)", torch.float16, "adam", True),
    ("fp16 + autocast, Adafactor, checkpointing", torch.float16, "adafactor", True),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/12_ticoe")
    ap.add_argument("--width", default="full", help="full: SD v1.4's shapes; narrow: a quick check of the script")
    ap.add_argument("--model", default="/tmp/sd14_" + "{width}", help="where the random-weight pipeline is built")
    ap.add_argument("--iterations", type=int, nargs=2, default=(10, 40))
    ap.add_argument("--images", type=int, default=8, help="reference images timed (512 px at full width)")
    args = ap.parse_args(argv)

    from erasure_lib.methods import ticoe
    from erasure_lib.testing import build_sd14_test_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = build_sd14_test_model(args.model.format(width=args.width), width=args.width)
    os.environ["ERASURE_BOOK_SD14"] = str(folder)
    from erasure_lib import load_pipeline

    bank = [f"a photo of a {w}" for w in ("gun", "rifle", "pistol", "revolver", "firearm", "handgun")]
    rows = []
    for label, dtype, optimizer, checkpointing in SETTINGS:
        pipe = load_pipeline("sd14", device=device, dtype=dtype)
        size = pipe.vae.config.sample_size
        images = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
        seconds = {}
        for n in (2, *args.iterations):  # the first call warms up (kernel selection, allocator): not timed
            cfg = ticoe.TICoEConfig.sd14(iterations=n, optimizer=optimizer, gradient_checkpointing=checkpointing,
                                         reference_images=4)
            _sync(device)
            if device == "cuda" and n != 2:
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            ticoe.erase(pipe, "gun", cfg, bank=bank, images=images, progress=False)
            _sync(device)
            seconds[n] = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else float("nan")
        reserved = torch.cuda.max_memory_reserved() if device == "cuda" else float("nan")
        short, long = args.iterations
        rows.append({"setting": label, "dtype": str(dtype).removeprefix("torch."), "optimizer": optimizer,
                     "gradient checkpointing": checkpointing, "peak allocated GiB": peak / 2**30,
                     "peak reserved GiB": reserved / 2**30,
                     "s per iteration": (seconds[long] - seconds[short]) / (long - short),
                     "unet parameters (M)": sum(p.numel() for p in pipe.unet.parameters()) / 1e6})
        print(rows[-1], flush=True)
        del pipe
        if device == "cuda":
            torch.cuda.empty_cache()

    # reference images: the code's 200 at the pipeline's defaults (50 steps, CFG 7.5), fp16
    from erasure_lib.sampling import generate
    pipe = load_pipeline("sd14", device=device)
    generate(pipe, ["a photo of gun"] * 2, [0, 1], steps=2, guidance=7.5, progress=False)  # warm-up
    _sync(device)
    t = time.perf_counter()
    generate(pipe, ["a photo of gun"] * args.images, range(args.images), steps=50, guidance=7.5, batch_size=8,
             progress=False)
    _sync(device)
    per_image = (time.perf_counter() - t) / args.images
    rows.append({"setting": "reference images (50 DDIM steps, CFG 7.5, fp16, batch 8)", "dtype": "float16",
                 "optimizer": "", "gradient checkpointing": False, "peak allocated GiB": float("nan"),
                 "peak reserved GiB": float("nan"), "s per iteration": float("nan"), "s per image": per_image,
                 "unet parameters (M)": sum(p.numel() for p in pipe.unet.parameters()) / 1e6})
    print(rows[-1], flush=True)

    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "gpu_memory_sd14_measured.csv", index=False)
    provenance = {"kind": "measured", "script": "benchmarks/ticoe_gpu.py", "width": args.width,
                  "iterations": list(args.iterations), "device": torch.cuda.get_device_name() if device == "cuda"
                  else "cpu", "torch": torch.__version__, "cuda": torch.version.cuda,
                  "model": "random weights in SD v1.4's shapes (erasure_lib.testing.build_sd14_test_model)",
                  "date": time.strftime("%Y-%m-%d")}
    (out / "gpu_memory_sd14_measured.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(table.to_string(index=False))


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
