"""Benchmark (not a test): NS-Net and its baselines on the toy, fitting time and scoring throughput.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detect.py [--threads 2] [--n-train 1024] [--n-score 2304]

Writes ``results/benchmarks/detect.csv`` (detector, what, n, seconds, images per second) with its provenance JSON:
each detector of chapter 40 (NS-Net, CLIP + LoRA, UnivFD, the CNN) fitted on chapter 40's toy training split
(``--n-train`` real renders, as many GAN + TinySD images; the images come from the cache ``runs/edits`` or are
generated first, not timed) and scoring ``--n-score`` test images. ``--threads``: torch's intra-op threads for the
whole run. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-score", type=int, default=2304)
    ap.add_argument("--cache-dir", default="runs/edits")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from erasure_lib import load_pipeline
    from erasure_lib.detect import aigi_bench, ns_net
    from erasure_lib.results import environment_info, write_table

    pipe = load_pipeline("toy")
    train = aigi_bench.build_split(pipe, "train", args.n_train, aigi_bench.TRAIN_GENERATORS, cache_dir=args.cache_dir)
    n_real = args.n_score // 9
    test = aigi_bench.build_split(pipe, "test", n_real, [g.name for g in aigi_bench.TOY_GENERATORS], n_fake=n_real,
                                  cache_dir=args.cache_dir)
    backbone = ns_net.Backbone.toy()
    rows = []
    for name in ns_net.DETECTORS:
        det = ns_net.make_detector(name, backbone, seed=0)
        start = time.perf_counter()
        det.fit(train.images, train.labels)
        fit = time.perf_counter() - start
        det.predict_proba(test.images[:64])  # warm-up
        start = time.perf_counter()
        det.predict_proba(test.images)
        score = time.perf_counter() - start
        rows.append({"detector": name, "what": f"fit on {len(train)} images", "n": len(train),
                     "seconds": round(fit, 2), "images_per_second": round(len(train) / fit, 1)})
        what = "score (captioning and patch selection included)" if name in ("NS-Net", "CLIP+LoRA") else "score"
        rows.append({"detector": name, "what": what, "n": len(test),
                     "seconds": round(score, 2), "images_per_second": round(len(test) / score, 1)})
        print(rows[-2], rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_table(table, "benchmarks", "detect", provenance={
        "threads": args.threads, "n_train": len(train), "n_score": len(test), "environment": environment_info(),
        "configs": {"NS-Net": ns_net.NSNetConfig().to_json()}, "note": "images generated before timing (cached)"})
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
