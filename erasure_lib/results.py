"""Where notebooks write their tables: ``results/<notebook>/<table>.csv``, written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def results_dir(notebook: str) -> Path:
    """``results/<notebook>/`` at the repository root (created if missing)."""
    path = ROOT / "results" / notebook
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_table(df: pd.DataFrame, notebook: str, table: str) -> Path:
    """Write ``df`` to ``results/<notebook>/<table>.csv`` via a temporary file, so a crash never leaves half a table."""
    path = results_dir(notebook) / f"{table}.csv"
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
