"""Chapter 90's summary (erasure_lib.summary) and the papers' numbers it quotes (erasure_lib.papers)."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from erasure_lib import summary
from erasure_lib.papers import CLAIMS, PAPER_NUMBERS, paper_numbers

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT.parent / "shared" / "specs"


def test_t_interval_matches_the_t_table():
    # [1, 2, 3]: mean 2, sd 1, t_{0.975,2} = 4.303 -> half-width 4.303 / sqrt(3) = 2.4843
    mean, lo, hi = summary.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and lo == pytest.approx(-0.4843, abs=1e-4) and hi == pytest.approx(4.4843, abs=1e-4)
    # [0, 0, 0, 4]: mean 1, sd 2, t_{0.975,3} = 3.182 -> half-width 3.182
    assert summary.t_interval([0, 0, 0, 4])[1:] == pytest.approx((1 - 3.182, 1 + 3.182))
    # df = 30 (beyond the table): the exact quantile is 2.042
    x = np.r_[np.zeros(15), np.ones(16)]
    half = summary.t_interval(x)[2] - x.mean()
    assert half / (x.std(ddof=1) / np.sqrt(31)) == pytest.approx(2.042, abs=0.01)
    assert np.isnan(summary.t_interval([0.5])[1])
    with pytest.raises(ValueError):
        summary.t_interval([np.nan, 1.0])


def test_outcome_words():
    assert summary.outcome("confirmed") == "confirmed"
    assert summary.outcome("not confirmed") == "not confirmed"
    assert summary.outcome("not confirmed, limited by the toy world") == "limited by the toy world"
    assert summary.outcome("limited by the toy world") == "limited by the toy world"
    with pytest.raises(ValueError, match="not a verdict"):
        summary.outcome("maybe")


def _write(root, chapter, table, rows):
    (root / chapter).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / chapter / f"{table}.csv", index=False)


@pytest.fixture()
def fake_results(tmp_path):
    """A results tree with known values, one table per chapter as the chapters write them."""
    r = tmp_path
    _write(r, "10_co_erasing", "verdicts", [{"claim": "c10", "co_erasing_fid_gen": 12.0, "esd_u_fid_gen": 1.0,
                                             "verdict": "not confirmed, limited by the toy world"}])
    _write(r, "10_co_erasing", "claim", [{"method": m, "seed": s, "implicit": v}
                                         for s, (a, b) in enumerate([(1.0, 0.1), (1.0, 0.2), (1.0, 0.3)])
                                         for m, v in (("ESD-u", a), ("Co-Erasing", b))])
    _write(r, "11_trce", "verdicts", [{"claim": "a", "verdict": "not confirmed"},
                                      {"claim": "b", "verdict": "confirmed"}])
    _write(r, "11_trce", "paired", [
        {"claim": "a", "prompts": "implicit", "comparison": "TRCE [KEY] - TRCE [EoT]", "difference": 0.2,
         "lo": 0.05, "hi": 0.3, "seeds": 3},
        {"claim": "a", "prompts": "context-only", "comparison": "TRCE [KEY] - TRCE [EoT]", "difference": 0.9,
         "lo": 0.8, "hi": 1.0, "seeds": 3},
        {"claim": "b", "prompts": "implicit", "comparison": "UCE - TRCE (T+V)", "difference": 0.1, "lo": -0.02,
         "hi": 0.2, "seeds": 3}])
    _write(r, "12_ticoe", "verdicts", [{"baseline": "ESD-u", "TICoE explicit": 0.2, "baseline explicit": 1.0,
                                        "MCP difference": 0.3, "lo": 0.1, "hi": 0.5, "verdict": "confirmed"}])
    _write(r, "20_attacks", "claims", [{"claim": "TRCE below", "verdict": "not confirmed"}])
    _write(r, "20_attacks", "claim_comparisons", [{"claim": "TRCE below", "method": "TRCE", "baseline": "UCE",
                                                   "concept": "nudity", "attack": "MMA", "difference": -0.5,
                                                   "lo": -0.75, "hi": -0.25, "n": 12, "baseline_pre_asr": 0.4},
                                                  {"claim": "TRCE below", "method": "TRCE", "baseline": "ESD-u",
                                                   "concept": "nudity", "attack": "MMA", "difference": -1.0,
                                                   "lo": -1.0, "hi": -1.0, "n": 12, "baseline_pre_asr": 1.0}])
    _write(r, "30_set", "claim", [{"claim": "SET above", "best_baseline": "CDA", "difference": -0.1, "lo": -0.2,
                                   "hi": 0.0, "n_seeds": 3, "verdict": "not confirmed"}])
    _write(r, "40_ns_net", "claim", [{"claim": "NS above", "baseline": "UnivFD", "difference": 0.04, "lo": 0.01,
                                      "hi": 0.07, "verdict": "limited by the toy world"}])
    return r


def test_claims_table_signs_and_intervals(fake_results):
    t = summary.claims_table(fake_results).set_index("chapter")
    assert list(t.columns) == [c for c in summary.COLUMNS if c != "chapter"]
    ch10 = t.loc["10_co_erasing"]
    # per-seed differences -0.9, -0.8, -0.7: mean -0.8, sd 0.1, half-width 4.303 * 0.1 / sqrt(3) = 0.2484
    assert ch10.ours == pytest.approx(-0.8) and ch10.lo == pytest.approx(-1.0484, abs=1e-4)
    assert ch10.outcome == "limited by the toy world" and ch10.predicts == "< 0"
    trce = t.loc["11_trce"].set_index("comparison")
    # the chapter's "KEY - EoT = +0.2 [0.05, 0.3]" read as the claim's "EoT - KEY = -0.2 [-0.3, -0.05]"
    a = trce.loc["TRCE [EoT] - TRCE [KEY]"]
    assert (a.ours, a.lo, a.hi) == pytest.approx((-0.2, -0.3, -0.05)) and a.outcome == "not confirmed"
    b = trce.loc["TRCE (T+V) - UCE"]
    assert (b.ours, b.lo, b.hi) == pytest.approx((-0.1, -0.2, 0.02)) and b.outcome == "confirmed"
    assert len(trce) == 2                                  # implicit prompts only
    assert t.loc["12_ticoe"].predicts == "> 0" and t.loc["12_ticoe"].ours == 0.3
    attacks = t.loc["20_attacks"].set_index("comparison")
    assert attacks.tested.to_dict() == {"TRCE - UCE (MMA)": True, "TRCE - ESD-u (MMA)": False}
    assert t.loc["30_set"].comparison == "SET - CDA" and t.loc["40_ns_net"].outcome == "limited by the toy world"
    outcomes = summary.claim_outcomes(summary.claims_table(fake_results))
    assert len(outcomes) == 7 and set(outcomes.outcome) <= set(summary.OUTCOMES)


def test_a_missing_table_names_the_notebook_to_run(fake_results):
    (fake_results / "30_set" / "claim.csv").unlink()
    with pytest.raises(FileNotFoundError, match="notebooks/30_set.ipynb"):
        summary.claims_table(fake_results)


def test_the_committed_results_give_every_chapter_a_row():
    t = summary.claims_table(ROOT / "results")
    assert set(t.chapter) == {"10_co_erasing", "11_trce", "12_ticoe", "20_attacks", "30_set", "40_ns_net"}
    assert set(t.paper) == set(summary.PAPERS)
    assert set(t.outcome) <= set(summary.OUTCOMES)
    finite = t.dropna(subset=["lo", "hi"])
    assert ((finite.lo <= finite.ours + 1e-12) & (finite.ours <= finite.hi + 1e-12)).all()
    assert t.paper_numbers.str.len().gt(0).all()
    for paper in summary.PAPERS:
        pairs = summary.paper_vs_ours(paper, ROOT / "results")
        assert pairs and all(len(theirs) and len(ours) for theirs, _, ours in pairs)
        for _, _, ours in pairs:
            assert ours.value.between(0, 1).all() and (ours.lo <= ours.value + 1e-12).all()
    with pytest.raises(ValueError, match="unknown paper"):
        summary.paper_vs_ours("ESD", ROOT / "results")


def test_paper_numbers_registry():
    assert set(paper_numbers().claim) == set(CLAIMS)
    with pytest.raises(ValueError, match="co_erasing_implicit"):
        paper_numbers("nope")
    trce = paper_numbers("trce_vs_baselines").set_index("method").value
    assert trce["TRCE (T+V)"] == 1.29 and trce["ESD"] == 31.15      # specs/trce.md Table 1


@pytest.mark.skipif(not SPECS.exists(), reason="../shared/specs is not beside this clone")
def test_every_paper_number_is_written_in_the_spec_it_cites():
    for row in PAPER_NUMBERS:
        spec = re.search(r"specs/([\w.-]+\.md)", row.source)
        assert spec, f"{row}: no spec cited"
        text = (SPECS / spec.group(1)).read_text()
        forms = {f"{row.value:g}", f"{row.value:.2f}", f"{row.value:.1f}"}
        assert any(re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", text) for f in forms), \
            f"{row.paper} {row.method} {row.value} not found in {spec.group(1)}"


def test_overview_one_row_per_claim_with_the_papers_numbers_of_the_methods_compared(fake_results, tmp_path):
    table = summary.claims_table(fake_results)
    overview = summary.claims_overview(table).set_index("claim")
    assert len(overview) == 7
    b = overview.loc[summary._TRCE_CLAIMS["b"][0]]
    assert b["ours: difference [95% CI]"] == "TRCE (T+V) - UCE: -0.10 [-0.20, +0.02] (predicted < 0)"
    assert "UCE 8.16" in b["paper's numbers (SD)"] and "TRCE (T+V) 1.29" in b["paper's numbers (SD)"]
    assert "[KEY]" not in b["paper's numbers (SD)"] and b.verdict == "confirmed"
    assert summary.outcome("not measured") == "not measured"
    attack = overview.loc["TRCE below"]["paper's numbers (SD)"]
    assert "MMA" in attack and "UCE 30.8" in attack and "P4D" not in attack      # the attack compared only
    assert "ESD-u (MMA): -1.00 [-1.00, -1.00] (set aside" in overview.loc["TRCE below"]["ours: difference [95% CI]"]
    table.to_csv(tmp_path / "claims.csv", index=False)                             # as chapter 90 writes it
    assert summary.claims_overview(pd.read_csv(tmp_path / "claims.csv")).equals(summary.claims_overview(table))
