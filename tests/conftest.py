"""Test-session setup: one CPU thread and no hub access.

With another busy process on the 2 cores, torch's default 2 OpenMP threads slow the tiny models
about 100x (specs/stack.md section 6), so every test runs single-threaded. The environment
variables are set before torch is imported anywhere in the session. Result tables written during the session go
to a scratch folder ($ERASURE_BOOK_RESULTS), never into the committed results/.
"""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
# nbval runs notebooks 00 and 01 in kernels that inherit this environment: their tables go to a scratch folder,
# so `make test` leaves the committed results/ (and their provenance) untouched.
os.environ["ERASURE_BOOK_RESULTS"] = tempfile.mkdtemp(prefix="erasure-book-test-results-")
atexit.register(shutil.rmtree, os.environ["ERASURE_BOOK_RESULTS"], True)

try:
    import torch
except ImportError:  # collection must still work, e.g. for tests that need no torch
    pass
else:
    torch.set_num_threads(1)


def explicit_rates(pipe, clf, seeds_per_prompt=2, steps=10, guidance=5.0):
    """(sensitive rate on explicit prompts, object rate on explicit object prompts) of a toy pipeline."""
    import numpy as np
    import pandas as pd
    import torch

    from erasure_lib.sampling import generate
    from erasure_lib.toyworld.captions import prompt_set
    table = pd.concat([prompt_set("sensitive_explicit"), prompt_set("explicit_object")], ignore_index=True)
    table = table.loc[table.index.repeat(seeds_per_prompt)].reset_index(drop=True)
    images = generate(pipe, table.prompt, range(len(table)), steps=steps, guidance=guidance, batch_size=64, progress=False)
    pred = clf.predict(torch.from_numpy(images))
    nude = pred["sensitive"]["prob"][:, 1].numpy() > 0.5
    hit = np.asarray(pred["object"]["label"]) == table.target.to_numpy()
    sens = table.set.to_numpy() == "sensitive_explicit"
    return float(nude[sens].mean()), float(hit[~sens].mean())


@pytest.fixture(scope="session")
def rates():
    return explicit_rates


# --- the sd14 profile, on the SD-v1.4-shaped test model (random weights, narrow channels, built offline) ------------

SD14_FILES = ("nudity-unlearndiff.csv", "I2P_prompts_4703.csv", "big_artist_prompts.csv", "coco_30k_val.csv",
              "nudity-p4d.csv", "nudity-mma-diffusion.csv")


@pytest.fixture(scope="module")
def sd14_test_world(tmp_path_factory):
    """The test model, its IP-Adapter and CLIP judge, and a prompt cache holding the real sd14 prompt files: the
    environment (name -> value) that points the sd14 profile at them (:func:`sd14_env` sets it)."""
    from pathlib import Path

    import erasure_lib
    from erasure_lib.testing import build_all
    benchmarks = Path(os.environ.get("ERASURE_BOOK_BENCHMARKS")
                      or Path(erasure_lib.__file__).resolve().parents[2] / "shared" / "benchmarks")
    if not all((benchmarks / f).exists() for f in SD14_FILES):
        pytest.skip(f"the sd14 reference prompt files are not in {benchmarks} (set ERASURE_BOOK_BENCHMARKS)")
    root = tmp_path_factory.mktemp("sd14")
    paths = build_all(root / "models")
    (root / "cache" / "prompts").mkdir(parents=True)
    for f in SD14_FILES:
        shutil.copyfile(benchmarks / f, root / "cache" / "prompts" / f)
    return {"ERASURE_BOOK_SD14": str(paths["pipeline"]), "ERASURE_BOOK_SD14_IP_ADAPTER": str(paths["ip_adapter"]),
            "ERASURE_BOOK_SD14_CLIP": str(paths["clip"]), "ERASURE_BOOK_SD14_FID": f"clip:{paths['clip']}",
            "ERASURE_BOOK_CACHE": str(root / "cache")}


def sd14_env(monkeypatch, world):
    """Point the sd14 profile at the test world of :func:`sd14_test_world` for one test."""
    for key, value in world.items():
        monkeypatch.setenv(key, value)
