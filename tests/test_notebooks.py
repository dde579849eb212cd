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


def test_toy_world_notebook_calibration_runs_ci_sized(tmp_path, monkeypatch):
    """nbval checks chapter 00 as committed but skips its calibration cells (they train edits): here the whole
    chapter runs, small, and writes every calibration table with one row per fact."""
    from erasure_lib.calibration import FACTS
    committed = ROOT / "results" / "00_toy_world" / "calibration.csv"
    before = _digest(committed)
    out = _run("00_toy_world", tmp_path, monkeypatch, n_heldout=100, seeds_per_prompt=1, steps=3, iteration_cap=2,
               calibration_seeds_per_prompt=1, calibration_steps=3, calibration_guidances=[1.0, 5.0], n_boot=20,
               cache_dir=None)
    facts = pd.read_csv(out / "calibration.csv")
    assert list(facts.name) == [f.name for f in FACTS]
    assert set(facts.reproduced) <= {"yes", "no", "not measured"}
    assert facts.set_index("name").loc["attacks_raise_asr", "reproduced"] == "not measured"
    for table in ("calibration_rates", "calibration_diagnostics", "calibration_guidance_sweep"):
        assert (out / f"{table}.csv").exists() and (out / f"{table}.json").exists()
    assert (out / "zoo_quality.csv").exists()
    assert _digest(committed) == before
