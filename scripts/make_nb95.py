"""Writes notebooks/95_sd14.ipynb, the sd14 run guide (its source; `jupyter execute` fills in the outputs)."""
from nbgen import SKIP, Notebook

book = Notebook()
md, code = book.md, book.code

md(r'''
# Running a chapter on Stable Diffusion v1.4

Every chapter runs on the toy world by default, on two CPU cores. To run the same notebook on Stable Diffusion v1.4
{cite}`rombach2022ldm` with the papers' prompt sets and judges, set `profile = "sd14"` in its `parameters` cell, on a
machine with a GPU. The code path is the same: the notebook reads its sd14 models, prompt sets, judges and sizes
from `erasure_lib.profiles` and each method's SD values from its `.sd14()` configuration. The sd14 prompt sets
contain sexually explicit text; read {doc}`../book/safety` first.

## On Colab

1. Open the chapter with the rocket button ("Launch on Colab") at the top of its page. The notebook's first cell
   installs the library on Colab only.
2. **Runtime > Change runtime type > T4 GPU** (free) or A100 (Colab Pro).
3. Set `profile = "sd14"` in the `parameters` cell, and set any chapter-specific parameter the table below names.
4. For Inception FID (the papers' FID features), run `!ERASURE_BOOK_GPU_EXTRA=1 bash
   erasure-book/scripts/colab_install.sh` once. Without it, FID falls back to CLIP features, with a warning.

The first run downloads SD v1.4 (`CompVis/stable-diffusion-v1-4`, about 4 GB), CLIP ViT-L/14, the IP-Adapter
(chapter 10), the prompt sets and the other files a chapter needs. If the hub refuses the model, accept SD v1.4's
licence on its hub page and log in once (`from huggingface_hub import notebook_login; notebook_login()`).

Offline, local copies work through environment variables:
- `ERASURE_BOOK_SD14`: a diffusers pipeline folder;
- `ERASURE_BOOK_SD14_IP_ADAPTER`: an IP-Adapter folder in the `h94` layout;
- `ERASURE_BOOK_SD14_CLIP`: a CLIP folder;
- `ERASURE_BOOK_TICOE_BANKS`: TICoE's bank files;
- `ERASURE_BOOK_CACHE`: where prompt files are cached.

## What each chapter needs

The table below is computed by this page from the library, for each chapter's default sd14 plan
(`erasure_lib.profiles`); nothing in it is typed in by hand.

* **GPU time** is *computed* by `erasure_lib.runtime` from the UNet calls of the run, counted from the same
  configurations the methods use (tests check the counts against the real calls on the toy), then priced with the
  diffusers documentation's published SD throughput on a T4 and an A100. Networks other than the UNet are priced by
  their FLOPs against a UNet row's, where the chapter counts them. The times are lower bounds: model downloads,
  judges on the CPU, the text encoder's calls and Python overhead are not counted. They are not measured, because no
  GPU was available to this project when they were written; TICoE's training (chapter 12) is the exception, timed
  per iteration and per reference image on an H200.
* **GPU memory** is *computed* by `erasure_lib.memory`: the pipeline's weights plus the largest phase (a training
  step, a sampling batch and its decode, a detector's probe), with every tensor counted on the meta device at SD's
  shapes. A chapter *fits* a card when its peak leaves a reserve free (`erasure_lib.memory.RESERVE`, for the CUDA
  context and the allocator). Chapter 12's memory is measured on the H200.
''')

book.colab()

code('''
# parameters (papermill overrides them): the page computes every chapter's default sd14 plan, whatever the profile
measured_results = None   # a results folder with 12_ticoe/gpu_memory_sd14_measured.csv (None: the repository's)
''', tags=["parameters"])

code('''
# every chapter's default sd14 plan: GPU time (computed; chapter 12 measured on an H200) and peak GPU memory
import warnings

with warnings.catch_warnings():  # run alone (nbval), the first import of the library: tqdm's notebook warning
    warnings.simplefilter("ignore")
    from erasure_lib import costs, memory, runtime
    from erasure_lib.results import show_table, write_table

guide = costs.guide(measured_results)
write_table(guide, "95_sd14", "guide", provenance={
    "throughput": runtime.BENCHMARK_SOURCE, "memory": "erasure_lib.memory (meta-device byte counts, fp16 pipeline, "
    f"{memory.RESERVE / memory.GIB:.0f} GiB reserve)", "measured": "results/12_ticoe/gpu_memory_sd14_measured.csv (H200)"})
show_table(guide[["chapter", "sd14 plan (default)", "T4 min", "A100 min", "H200 min", "peak GiB", "T4 16 GB fits?",
                  "largest phase"]], digits=1, caption="Each chapter's default sd14 plan on a GPU")
''')

code('''
# NBVAL_CHECK_OUTPUT
for _, r in guide.iterrows():
    when = (f"T4 {r['T4 min']:.0f} min, A100 {r['A100 min']:.0f} min" if r["time"] == "computed" else
            f"H200 {r['H200 min']:.1f} min (measured)" if r["time"] != "none" else "no GPU")
    mem = f"{r['peak GiB']:.1f} GiB, fits a T4: {r['T4 16 GB fits?']}" if r["memory"] != "none" else "no GPU"
    print(f"{r.chapter:20s} {when:30s} {mem}")
''')

md(r'''
Chapter 12's H200 times are not comparable with the computed T4 and A100 times: an H200 is faster than an A100.
Chapters 10, 11, 20 and 30 print their own tables, and the counts are in `results/`: chapters 01 and 10,
`results/10_co_erasing/gpu_runtime_sd14.csv` and `gpu_memory_sd14.csv`; chapter 11, `results/11_trce/gpu_runtime.csv`;
chapter 12, `results/12_ticoe/gpu_memory_sd14_measured.csv`; chapter 20, `results/20_attacks/cost.csv`; chapter 30,
`results/30_set/gpu_runtime_sd14.csv` and `gpu_memory_sd14.csv`; this page, `results/95_sd14/guide.csv`.

The phases of each chapter, by GPU time:
''')

code('''
phases = costs.phases()
write_table(phases, "95_sd14", "phases", provenance={"throughput": runtime.BENCHMARK_SOURCE})
show_table(phases, digits=1, caption="GPU minutes per phase of each chapter's default sd14 plan (computed)")
''')

md(r'''
Each chapter's `preset = "sd14-paper"` (where it exists) runs the papers' full protocol instead:
''')

code('''
# NBVAL_CHECK_OUTPUT
paper = {"10": runtime.chapter10("sd14", "sd14-paper"), "11": runtime.chapter11("sd14", "sd14-paper"),
         "20": runtime.chapter20("sd14", "sd14-paper")}
for ch, w in paper.items():
    print(f"chapter {ch}, preset 'sd14-paper': {w.seconds('A100') / 3600:.1f} h on an A100, "
          f"{w.seconds('T4') / 3600:.1f} h on a T4 (computed)")
''')

md(r'''
## Chapter 40: the real images

Chapter 40 needs real photographs, which the project cannot download for you. Set `real_folder` to a folder of
images. A UniversalFakeDetect or AIGIBench test folder works (`<folder>/[<generator>/]0_real|1_fake/`), and its
`1_fake` images become extra test generators. So does COCO val2017. The split is by caption, so the folder must hold
enough images for the default sizes; the GPU time above counts the smallest folder that fills the splits in
expectation (`erasure_lib.runtime.chapter40`). The images are captioned with BLIP, unless the folder has a
`captions.json` (or DGS-Net's `<folder>_text.json`) mapping each image's relative path to its caption.
''')

book.write("95_sd14", "c95", final_newline=False)
