"""Notebooks too long for nbval run here CI-sized through papermill, with their results written to a
temporary folder: every cell must run, every table must be written. (nbval checks notebooks 00 and 01 as
committed; the cells of the long notebooks carry the ``nbval-skip`` tag.)"""
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(name, tmp_path, monkeypatch, **parameters):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("ERASURE_BOOK_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                               parameters=parameters, cwd=str(ROOT / "notebooks"), kernel_name="python3",
                               progress_bar=False)
    return tmp_path / "results" / name


def _digest(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_co_erasing_notebook_runs_ci_sized(tmp_path, monkeypatch):
    committed = ROOT / "results" / "10_co_erasing" / "main.csv"
    before = _digest(committed)
    out = _run("10_co_erasing", tmp_path, monkeypatch, iteration_cap=3, claim_seeds=[0], tradeoff_iterations=[1],
               seeds_per_prompt=1, steps=3, n_boot=20, cache_dir=None)
    main = pd.read_csv(out / "main.csv")
    assert len(main) == 3 * 5 and set(main.method) == {"SD (unedited)", "ESD-x", "ESD-u", "UCE", "Co-Erasing"}
    for table in ("ablation", "tradeoff", "claim"):
        assert (out / f"{table}.csv").exists() and (out / f"{table}.json").exists()
    assert _digest(committed) == before  # the committed results are not touched
