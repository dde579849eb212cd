"""Benchmark (not a test): toy generation throughput over a batch-size sweep, and metric throughput.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/generation.py [--threads 2] [--images 256]

Writes ``results/benchmarks/generation.csv`` (one row per measurement: what, batch size, images, seconds,
images per second) with its provenance JSON. Goal on 2 cores (issue 3): at least 30 TinySD images/s at 25
DDIM steps with CFG. Run it on a quiet machine: a busy neighbour process makes CPU timings meaningless.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch


def _time(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=256, help="images per generation measurement")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[8, 16, 32, 64, 128, 256])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from erasure_lib import generate, load_pipeline
    from erasure_lib.metrics import clip_score, concept_rate, fid
    from erasure_lib.results import write_table
    from erasure_lib.toyworld.captions import prompt_set

    pipe = load_pipeline("toy")
    prompts = list(prompt_set("explicit_object").prompt)
    prompts = (prompts * (args.images // len(prompts) + 1))[:args.images]
    seeds = list(range(args.images))
    generate(pipe, prompts[:16], seeds[:16], steps=args.steps, batch_size=16, progress=False)  # warm-up
    rows = []
    for bs in args.batch_sizes:
        sec = _time(lambda: generate(pipe, prompts, seeds, steps=args.steps, guidance=5.0, batch_size=bs,
                                     progress=False))
        rows.append({"what": f"TinySD generate, {args.steps} DDIM steps, CFG 5", "batch_size": bs,
                     "images": args.images, "seconds": round(sec, 3), "images_per_s": round(args.images / sec, 2)})
        print(rows[-1], flush=True)
    # the same work with one intra-op thread and the batches in parallel sampling threads (erasure_lib.sampling.
    # sample_workers: what make book and CI get with OMP_NUM_THREADS=1), beside torch's threads alone
    from erasure_lib.sampling import SAMPLE_WORKERS_ENV
    for threads, workers in ((args.threads, 1), (1, 1), (1, args.threads)):
        torch.set_num_threads(threads)
        os.environ[SAMPLE_WORKERS_ENV] = str(workers)
        sec = _time(lambda: generate(pipe, prompts, seeds, steps=args.steps, guidance=5.0, batch_size=64,
                                     progress=False))
        rows.append({"what": f"TinySD generate, {args.steps} DDIM steps, CFG 5; {threads} torch thread(s), "
                             f"{workers} sampling thread(s)", "batch_size": 64, "images": args.images,
                     "seconds": round(sec, 3), "images_per_s": round(args.images / sec, 2)})
        print(rows[-1], flush=True)
    del os.environ[SAMPLE_WORKERS_ENV]
    torch.set_num_threads(args.threads)
    images = generate(pipe, prompts, seeds, steps=args.steps, batch_size=64, progress=False)
    other = np.roll(images, 1, axis=0)
    metrics = {
        "toy classifier concept rate": lambda: concept_rate(images, "church"),
        "FID (toy features, both sets)": lambda: fid(images, other, n_boot=0),
        "CLIP score (toy CLIP)": lambda: clip_score(images, prompts),
    }
    for name, fn in metrics.items():
        fn()  # warm-up: model loading is not throughput
        sec = _time(fn, repeats=2)
        rows.append({"what": name, "batch_size": None, "images": len(images), "seconds": round(sec, 3),
                     "images_per_s": round(len(images) / sec, 1)})
        print(rows[-1], flush=True)
    try:
        from erasure_lib.metrics import nudity_rate
        big = np.repeat(np.repeat(images[:32], 10, axis=1), 10, axis=2)  # 320 px, NudeNet's input size
        nudity_rate(big[:2], preset="ringabell_045")
        sec = _time(lambda: nudity_rate(big, preset="ringabell_045"), repeats=2)
        rows.append({"what": "NudeNet 3.4.2 (320 px, 1 ORT thread)", "batch_size": None, "images": len(big),
                     "seconds": round(sec, 3), "images_per_s": round(len(big) / sec, 1)})
        print(rows[-1], flush=True)
    except ImportError as err:
        print("NudeNet skipped:", err)
    table = pd.DataFrame(rows)
    path = write_table(table, "benchmarks", "generation", provenance={
        "profile": "toy", "threads": args.threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(), "steps": args.steps, "guidance": 5.0,
        "note": "best of 1 (generation) or 2 (metrics) runs; model loading excluded"})
    print(table.to_string(index=False))
    print("written", path)


if __name__ == "__main__":
    main()
