"""Result tables are written atomically with their provenance, and render with their intervals."""
import json

import pandas as pd
import pytest

from erasure_lib import results


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv("ERASURE_BOOK_RESULTS", raising=False)
    monkeypatch.setattr(results, "ROOT", tmp_path)
    return tmp_path


def test_table_and_provenance(root):
    df = pd.DataFrame({"method": ["SD", "ESD-x"], "rate": [0.9, 0.1], "rate_lo": [0.8, 0.05], "rate_hi": [0.95, 0.2]})
    path = results.write_table(df, "99_test", "main", provenance={"profile": "toy", "seeds": [0, 1, 2],
                                                                   "judge": {"name": "toy", "sha256": "ab"}})
    assert path == root / "results" / "99_test" / "main.csv"
    pd.testing.assert_frame_equal(pd.read_csv(path), df)
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["profile"] == "toy" and record["seeds"] == [0, 1, 2] and record["rows"] == 2
    assert record["environment"]["packages"]["torch"].startswith("2.13")
    assert record["environment"]["git_commit"]  # a sha, sha+dirty, or "unknown" outside git
    assert not list((root / "results" / "99_test").glob("*.tmp"))
    pd.testing.assert_frame_equal(results.read_table("99_test", "main"), df)


def test_missing_table_says_which_notebook(root):
    with pytest.raises(FileNotFoundError, match="notebooks/98_none.ipynb"):
        results.read_table("98_none", "main")
    with pytest.raises(ValueError):
        results.results_dir("../escape")


def test_show_table_formats_estimates():
    df = pd.DataFrame({"method": ["SD"], "rate": [0.912], "rate_lo": [0.851], "rate_hi": [0.955], "fid": [1.5]})
    html = results.show_table(df, estimates={"rate": ("rate", "rate_lo", "rate_hi")}).to_html()
    assert "0.91 [0.85, 0.95]" in html and "1.50" in html and "rate_lo" not in html
    assert results.format_estimate(0.5, float("nan"), float("nan")) == "0.50"
    with pytest.raises(KeyError):
        results.show_table(df, estimates={"x": ("a", "b", "c")})
