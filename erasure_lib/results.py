"""Where notebooks write their tables, and what is recorded next to every number.

``results/<notebook>/<table>.csv`` holds a tidy table (written atomically: a crash never leaves half a
table) and ``results/<notebook>/<table>.json`` its provenance (specs/evaluation.md section 11): profile,
seeds, generation settings, judges with the SHA-256 of their weights, package versions and the git commit
of the code that computed it. :func:`show_table` renders a table in the book, with estimates and their
95% intervals side by side.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

from ._io import atomic_path, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "diffusers", "transformers", "torchmetrics", "nudenet", "onnxruntime", "numpy", "pandas")


def results_root() -> Path:
    """``results/`` at the repository root, or ``$ERASURE_BOOK_RESULTS`` (smoke tests write elsewhere)."""
    return Path(os.environ.get("ERASURE_BOOK_RESULTS") or ROOT / "results")


def results_dir(notebook: str) -> Path:
    """``results/<notebook>/`` (see :func:`results_root`; created if missing)."""
    if not notebook or "/" in notebook or notebook.startswith("."):
        raise ValueError(f"not a notebook name: {notebook!r}")
    path = results_root() / notebook
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_table(df: pd.DataFrame, notebook: str, table: str, provenance: dict | None = None) -> Path:
    """Write ``df`` to ``results/<notebook>/<table>.csv``; with ``provenance`` (any JSON-able dict: profile,
    seeds, settings, judges...) also ``<table>.json`` with it plus :func:`environment_info`."""
    path = results_dir(notebook) / f"{table}.csv"
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    if provenance is not None:
        record = {"table": f"{path.parent.name}/{path.name}", "rows": len(df), **provenance,
                  "environment": environment_info()}
        atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_table(notebook: str, table: str, root: Path | None = None) -> pd.DataFrame:
    """``<root>/<notebook>/<table>.csv`` (``root``: :func:`results_root`), or an error naming the notebook to run."""
    path = (root if root is not None else results_root()) / notebook / f"{table}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/{notebook}.ipynb first")
    return pd.read_csv(path)


def git_commit() -> str:
    """The commit of the code, with ``+dirty`` when the work tree has uncommitted changes to tracked files;
    ``"unknown"`` outside a git checkout (e.g. an installed package)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def environment_info() -> dict:
    """Package versions, Python, platform and git commit."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(terse=True),
            "packages": versions, "git_commit": git_commit()}


def format_estimate(value: float, lo: float, hi: float, digits: int = 2) -> str:
    """``"0.42 [0.35, 0.49]"``."""
    if pd.isna(value):
        return "–"
    if pd.isna(lo) or pd.isna(hi):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def show_table(df: pd.DataFrame, estimates: dict[str, tuple[str, str, str]] | None = None, digits: int = 2,
               caption: str | None = None):
    """Render a results table in the book. ``estimates`` maps a display column to its
    ``(value, lo, hi)`` columns, shown as ``value [lo, hi]``; those source columns are dropped. Returns a
    pandas ``Styler`` (HTML in the book, text in a terminal)."""
    out = df.copy()
    for name, (v, lo, hi) in (estimates or {}).items():
        missing = {v, lo, hi} - set(out.columns)
        if missing:
            raise KeyError(f"columns {sorted(missing)} not in the table")
        out[name] = [format_estimate(a, b, c, digits) for a, b, c in zip(out[v], out[lo], out[hi])]
        out = out.drop(columns=[c for c in (v, lo, hi) if c != name])
    floats = [c for c in out.columns if pd.api.types.is_float_dtype(out[c])]
    styler = out.style.hide(axis="index").format({c: f"{{:.{digits}f}}" for c in floats}, na_rep="–")
    if caption:
        styler = styler.set_caption(caption)
    return styler


__all__ = ["ROOT", "environment_info", "format_estimate", "git_commit", "read_table", "results_dir", "show_table",
           "write_table"]
