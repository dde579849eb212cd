"""What every chapter's default sd14 plan costs on a GPU: the table of the book's sd14 run guide
(``notebooks/95_sd14.ipynb``), gathered from :mod:`erasure_lib.runtime` (GPU time, computed from the counted UNet
calls and a published throughput), :mod:`erasure_lib.memory` (peak GPU memory, computed on the meta device) and
chapter 12's H200 measurement (``results/12_ticoe/gpu_memory_sd14_measured.csv``, written by
``benchmarks/ticoe_gpu.py``). Nothing here runs a model; the first call takes about a minute (the meta-device counts)."""
from __future__ import annotations

import pandas as pd

from . import chapters, memory, runtime
from .profiles import (chapter10_plan, chapter11_plan, chapter12_plan, chapter20_plan, chapter30_plan, chapter40_plan,
                       get_profile)

CHAPTERS = {"00": "the toy world", "01": "evaluation", "10": "Co-Erasing", "11": "TRCE", "12": "TICoE",
            "20": "attacks", "30": "SET", "40": "NS-Net", "90": "what reproduces"}
NO_GPU = {"00": "toy only", "90": "reads `results/` only"}
MEASURED = ("12_ticoe", "gpu_memory_sd14_measured")


def works() -> dict[str, runtime.Work]:
    """The counted GPU work of each chapter's default sd14 plan (chapter 12's is measured: :func:`ticoe_measured`)."""
    return {"01": runtime.chapter01("sd14"), "10": runtime.chapter10("sd14"), "11": runtime.chapter11("sd14"),
            "20": runtime.chapter20("sd14"), "30": runtime.chapter30("sd14"), "40": runtime.chapter40("sd14")}


def peaks() -> dict[str, list[tuple[str, int]]]:
    """The largest phases of each chapter's default sd14 plan: ``{chapter: [(phase, bytes), ...]}``, the pipeline's
    weights included (:mod:`erasure_lib.memory`)."""
    from .detect.set import SETConfig
    from .detect.t2ishield import T2IShieldConfig
    from .methods.trce import TRCEConfig
    from .tasks import method_config

    batch = get_profile("sd14").batch_size
    sampling = ("sampling", memory.inference_memory(2 * batch, decode_images=8)["total"])
    ch10 = chapter10_plan("sd14")
    trained10 = {"ESD-u": method_config("ESD-u", "sd14", **ch10.esd),
                 "Co-Erasing": chapters.co_erasing_config(profile="sd14")}
    set_batch, shield_batch = SETConfig.sd14().batch_size, T2IShieldConfig.sd14().batch_size
    return {
        "01": [(f"sampling (batch {batch} with CFG) and the VAE decode", sampling[1])],
        "10": [(f"{m} training ({c.optimizer})", memory.training_memory(m, c)["total"])
               for m, c in trained10.items() if m in ch10.methods] + [sampling],
        "11": [("TRCE stage 2 training (AdamW)", memory.trce_memory(TRCEConfig.sd14(**chapter11_plan("sd14").trce))
                ["total"]), sampling],
        "20": [("UnlearnDiffAtk step (the prompt's gradient through the UNet)", memory.attack_memory(1)["total"]),
               sampling],
        "30": [("Rickrolling: text-encoder training (160 prompts a step, fp32, AdamW)",
                memory.text_encoder_training_memory(160)["total"]),
               (f"SET probe (batch {set_batch} with CFG)",
                memory.inference_memory(2 * set_batch, decode_images=0)["total"]),
               (f"FTT maps (batch {shield_batch} with CFG)",
                memory.inference_memory(2 * shield_batch, decode_images=0)["total"]), sampling],
        "40": [(r["phase"], int(r["total GiB"] * memory.GIB)) for _, r in memory.chapter40_memory().iterrows()],
    }


def ticoe_measured(root=None) -> dict:
    """Chapter 12's sd14 plan from the H200 measurement: TICoE's training minutes (its iterations at the measured
    seconds per iteration of the plan's optimizer with gradient checkpointing), the reference images' minutes and the
    measured peak GiB of that setting. ``root``: the results folder that holds it (default: the repository's
    ``results/``, where the measurement is committed; no notebook of the book writes it)."""
    from .methods.ticoe import TICoEConfig
    from .results import ROOT, read_table

    table = read_table(*MEASURED, root=ROOT / "results" if root is None else root)
    config = TICoEConfig.sd14(**chapter12_plan("sd14").ticoe)
    train = table[(table.optimizer == config.optimizer) & table["gradient checkpointing"].astype(bool)]
    images = table[table.setting.str.startswith("reference images")]
    if train.empty or images.empty:
        raise ValueError(f"{'/'.join(MEASURED)} has no row for {config.optimizer} with checkpointing or for the "
                         "reference images")
    return {"optimizer": config.optimizer, "iterations": config.iterations, "reference_images": config.reference_images,
            "training_min": float(train["s per iteration"].iat[0]) * config.iterations / 60,
            "reference_min": float(images["s per image"].iat[0]) * config.reference_images / 60,
            "peak_gib": float(train["peak allocated GiB"].iat[0])}


def guide(root=None) -> pd.DataFrame:
    """One row per chapter: its default sd14 plan, GPU minutes on a T4 and an A100 (computed; chapter 12: H200
    minutes, measured), the peak GPU memory and its phase, and whether it fits each card of :data:`memory.GPUS`
    (the peak plus :data:`memory.RESERVE`). Chapters without a GPU run have empty cells."""
    plans = {"01": "the reduced prompt sets (`SD14_SIZES`)", "10": chapter10_plan("sd14").note,
             "11": chapter11_plan("sd14").note, "12": chapter12_plan("sd14").note, "20": chapter20_plan("sd14").note,
             "30": chapter30_plan("sd14").note, "40": chapter40_plan("sd14").note, **NO_GPU}
    work, peak, ticoe = works(), peaks(), ticoe_measured(root)
    rows = []
    for ch, title in CHAPTERS.items():
        row = {"chapter": f"{ch} {title}", "sd14 plan (default)": plans[ch], "T4 min": None, "A100 min": None,
               "H200 min": None, "time": "none", "peak GiB": None, "largest phase": "", "memory": "none"}
        if ch in work:
            row.update({"T4 min": work[ch].seconds("T4") / 60, "A100 min": work[ch].seconds("A100") / 60,
                        "time": "computed"})
        if ch in peak:
            what, most = max(peak[ch], key=lambda p: p[1])
            row.update({"peak GiB": most / memory.GIB, "largest phase": what, "memory": "computed"})
        if ch == "12":
            row.update({"H200 min": ticoe["training_min"] + ticoe["reference_min"],
                        "time": f"measured on an H200: TICoE's training {ticoe['training_min']:.1f} min "
                                f"({ticoe['iterations']} iterations), {ticoe['reference_min']:.1f} min for its "
                                f"{ticoe['reference_images']} reference images; the evaluation not counted",
                        "peak GiB": ticoe["peak_gib"], "memory": "measured on an H200",
                        "largest phase": f"TICoE training ({ticoe['optimizer']}, gradient checkpointing)"})
        for gpu in memory.GPUS:
            row[f"{gpu} fits?"] = "" if row["peak GiB"] is None else \
                ("yes" if memory.fits(row["peak GiB"] * memory.GIB, gpu) else "no")
        rows.append(row)
    return pd.DataFrame(rows)


def phases() -> pd.DataFrame:
    """GPU minutes per phase of each chapter's default sd14 plan (computed), phases of the same name summed."""
    return pd.concat([w.table().groupby("phase", sort=False, as_index=False).sum().assign(chapter=ch)
                      for ch, w in works().items()], ignore_index=True)[["chapter", "phase", "UNet rows", "T4 min",
                                                                          "A100 min"]]


__all__ = ["CHAPTERS", "guide", "peaks", "phases", "ticoe_measured", "works"]
