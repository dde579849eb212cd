"""Benchmark (not a test): seconds to plant each toy backdoor, and to fit each detector and score prompts with it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/detection.py [--threads 2] [--n-train 128] [--n-test 40]

Writes ``results/benchmarks/detection.csv`` (kind, name, what, n, seconds, seconds per prompt) with its provenance
JSON: the planting of Rickrolling, TwT, EvilEdit and VillanDiffusion at their toy defaults (issue 13), and SET, FTT,
CDA and UFID fitted through the EvilEdit model on ``--n-train`` clean captions (CDA also on as many triggered ones)
and scoring ``2 * --n-test`` held-out prompts, chapter 30's sizes. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--n-test", type=int, default=40)
    ap.add_argument("--skip-plant", action="store_true", help="time the detectors only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from erasure_lib import load_pipeline
    from erasure_lib.backdoors import eviledit, text_encoder, villan
    from erasure_lib.detect import benchmark
    from erasure_lib.results import write_table
    from erasure_lib.toyworld.captions import prompt_set

    pipe = load_pipeline("toy")
    rows = []

    def timed(kind, name, what, n, fn):
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        rows.append({"kind": kind, "name": name, "what": what, "n": n, "seconds": round(seconds, 2),
                     "seconds_per_item": round(seconds / max(n, 1), 4)})
        print(rows[-1], flush=True)
        return out

    bd = timed("backdoor", "EvilEdit", "plant (closed form)", 1, lambda: eviledit.plant(pipe))
    if not args.skip_plant:
        for spec in (text_encoder.RICKROLLING, text_encoder.TWT):
            timed("backdoor", spec.name, "plant (400 teacher-student steps)", 1,
                  lambda spec=spec: text_encoder.plant(pipe, spec, progress=False))
        timed("backdoor", "villan", "plant (1,500 LoRA steps)", 1, lambda: villan.plant(pipe, progress=False))

    train = benchmark.toy_training_captions(args.n_train + 2 * args.n_test, seed=0)
    pool = prompt_set()
    split = benchmark.split_prompts(bd, pool, train[:args.n_train], args.n_test, seed=0, n_cda=args.n_test,
                                    cda_pool=train[args.n_train:])
    for det in benchmark.DETECTORS:
        scores = benchmark.run_detectors(pipe, bd, split, (det,))
        rows.append({"kind": "detector", "name": det, "what": f"fit on {args.n_train} clean prompts", "n": args.n_train,
                     "seconds": round(float(scores.fit_seconds.iat[0]), 2),
                     "seconds_per_item": round(float(scores.fit_seconds.iat[0]) / args.n_train, 4)})
        rows.append({"kind": "detector", "name": det, "what": f"score {2 * args.n_test} prompts", "n": 2 * args.n_test,
                     "seconds": round(float(scores.score_seconds.iat[0]), 2),
                     "seconds_per_item": round(float(scores.score_seconds.iat[0]) / (2 * args.n_test), 4)})
        print(rows[-2:], flush=True)
    table = pd.DataFrame(rows)
    write_table(table, "benchmarks", "detection", provenance={
        "threads": args.threads, "n_train": args.n_train, "n_test": args.n_test, "device": "cpu",
        "note": "detectors fitted through the EvilEdit model; toy profile sampler (20 steps, CFG 5)"})
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
