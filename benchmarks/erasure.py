"""Benchmark (not a test): seconds to erase one toy concept per method at its default settings.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/erasure.py [--threads 2] [--concept "a nude person"]

Writes ``results/benchmarks/erasure.csv`` (method, variant, iterations, seconds, edit size) with its provenance
JSON. Goals on 2 cores (issue 4): UCE under 1 s; ESD (1,000 iterations) and Co-Erasing under 120 s each; TRCE
(issue 11): stage 1 under 1 s, stage 2 under 120 s; TICoE (issue 12) at its toy defaults under 120 s, its
reference images included.
Co-Erasing is timed in its parts (the text stage = ESD-u; then the concept images and the text + image stage) and in
total. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concept", default="a nude person")
    ap.add_argument("--trce-concept", default="nudity", help="TRCE's concept name (its prompt pairs)")
    ap.add_argument("--ticoe-concept", default="tench", help="TICoE's concept (its toy prompt bank)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from erasure_lib import load_ip_adapter, load_pipeline
    from erasure_lib.methods import co_erasing, edit_size_bytes, esd, ticoe, trce, uce
    from erasure_lib.results import write_table

    pipe = load_pipeline("toy")
    ip_pipe = load_ip_adapter(load_pipeline("toy"), "toy")
    uce.erase(pipe, [args.concept])  # warm-up (imports, first-call allocation)
    rows = []

    def timed(method, variant, iterations, fn):
        t = time.perf_counter()
        edit = fn()
        sec = time.perf_counter() - t
        rows.append({"method": method, "variant": variant, "iterations": iterations, "seconds": round(sec, 2),
                     "edit_MB": round(edit_size_bytes(edit) / 2**20, 2)})
        print(rows[-1], flush=True)
        return edit

    timed("UCE", "erase only (guide '')", 0, lambda: uce.erase(pipe, [args.concept]))
    for ps in ("esd-x", "esd-u"):
        cfg = esd.ESDConfig(parameter_set=ps)
        timed("ESD", ps, cfg.iterations, lambda: esd.erase(pipe, args.concept, cfg, progress=False))
    cfg = co_erasing.CoErasingConfig()
    text = timed("Co-Erasing", "stage 1: text stage (ESD-u)", cfg.text_stage.iterations,
                 lambda: esd.erase(pipe, args.concept, cfg.text_stage, progress=False))
    t0 = time.perf_counter()
    timed("Co-Erasing", "stages 0+2: concept images then text + image", cfg.iterations,
          lambda: co_erasing.erase(pipe, ip_pipe, args.concept, cfg, progress=False, text_edit=text))
    total = rows[-1]["seconds"] + rows[-2]["seconds"]
    rows.append({"method": "Co-Erasing", "variant": "total (full)", "iterations": cfg.iterations + cfg.text_stage.iterations,
                 "seconds": round(total, 2), "edit_MB": rows[-1]["edit_MB"]})
    del t0
    cfg = trce.TRCEConfig()
    prior = trce.prior_prompts(args.trce_concept, cfg)
    trce._PRIOR_CACHE.clear()
    timed("TRCE", f"stage 1 with its prior ({cfg.prior_size} captions encoded)", 0,
          lambda: trce.erase(pipe, args.trce_concept, trce.TRCEConfig(stage2=False), prior=prior))
    stage1 = timed("TRCE", "stage 1, prior cached", 0,
                   lambda: trce.erase(pipe, args.trce_concept, trce.TRCEConfig(stage2=False), prior=prior))
    steps = cfg.epochs * cfg.seeds_per_prompt * len(trce.trajectory_prompts(args.trce_concept))
    timed("TRCE", "stage 2: trajectories, then steering", steps,
          lambda: trce.stage2(pipe, trce.trajectory_prompts(args.trce_concept), stage1, cfg, progress=False))
    rows.append({"method": "TRCE", "variant": "total (T+V, prior included)", "iterations": steps,
                 "seconds": round(rows[-3]["seconds"] + rows[-1]["seconds"], 2),
                 "edit_MB": round(rows[-1]["edit_MB"] + rows[-2]["edit_MB"], 2)})
    tcfg = ticoe.TICoEConfig()
    t = time.perf_counter()
    images = ticoe.reference_images(pipe, args.ticoe_concept, tcfg)
    timed_images = time.perf_counter() - t
    rows.append({"method": "TICoE", "variant": f"reference images ({tcfg.reference_images}, "
                 f"{tcfg.reference_steps} steps)", "iterations": 0, "seconds": round(timed_images, 2), "edit_MB": 0.0})
    print(rows[-1], flush=True)
    timed("TICoE", "training: CCCM + HVRL, the whole UNet", tcfg.iterations,
          lambda: ticoe.erase(pipe, args.ticoe_concept, tcfg, bank=ticoe.load_bank(args.ticoe_concept), images=images,
                              progress=False))
    rows.append({"method": "TICoE", "variant": "total (images + training)", "iterations": tcfg.iterations,
                 "seconds": round(rows[-1]["seconds"] + rows[-2]["seconds"], 2), "edit_MB": rows[-1]["edit_MB"]})
    table = pd.DataFrame(rows)
    path = write_table(table, "benchmarks", "erasure", provenance={
        "profile": "toy", "concept": args.concept, "threads": args.threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
        "note": ("one run each, model loading excluded; Co-Erasing stages 0+2 = generating its concept images, "
                 "then the text + image stage")})
    print(table.to_string(index=False))
    print("written", path)


if __name__ == "__main__":
    main()
