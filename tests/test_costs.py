"""erasure_lib.costs: the sd14 run guide's table (every chapter's GPU time and memory)."""
import pandas as pd
import pytest

from erasure_lib import costs, memory


@pytest.fixture(scope="module")
def guide():
    return costs.guide()


def test_every_chapter_of_the_book_has_a_row(guide):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import build_book
    chapters = {n.split("_")[0] for n in build_book.toc_notebooks()} - {"95"}   # 95 is the guide itself
    assert {c.split()[0] for c in guide.chapter} == chapters
    no_gpu = guide[guide.chapter.str.startswith(("00", "90"))]
    assert no_gpu[["T4 min", "A100 min", "H200 min", "peak GiB"]].isna().all().all()
    assert (no_gpu.time == "none").all() and (no_gpu["T4 16 GB fits?"] == "").all()


def test_chapter12_is_its_h200_measurement(guide):
    # results/12_ticoe/gpu_memory_sd14_measured.csv: Adafactor with checkpointing 0.4436 s per iteration (500
    # iterations, TICoE's code) and 0.3983 s per reference image (100 in the sd14 plan); peak 10.52 GiB
    row = guide[guide.chapter.str.startswith("12")].iloc[0]
    assert row["H200 min"] == pytest.approx((0.4435714041 * 500 + 0.3983470874 * 100) / 60, rel=1e-6)
    assert row["peak GiB"] == pytest.approx(10.518, abs=1e-3) and row.memory == "measured on an H200"
    assert pd.isna(row["T4 min"]) and "500 iterations" in row.time and "100 reference images" in row.time


def test_fits_is_the_peak_against_the_card_less_the_reserve(guide):
    timed = guide[guide.time == "computed"]
    assert (timed["A100 min"] < timed["T4 min"]).all() and (timed["T4 min"] > 10).all()
    for gpu, size in memory.GPUS.items():
        room = (size - memory.RESERVE) / memory.GIB     # T4 16 GB: 14.75 GiB less 1
        measured = guide[guide.memory != "none"]
        assert list(measured[f"{gpu} fits?"]) == ["yes" if p <= room else "no" for p in measured["peak GiB"]]
    ns_net = guide[guide.chapter.str.startswith("40")].iloc[0]
    assert ns_net["T4 16 GB fits?"] == "no" and ns_net["A100 40 GB fits?"] == "yes"   # fp32 CLIP training


def test_phases_cover_the_timed_chapters(guide):
    phases = costs.phases()
    timed = {c.split()[0] for c in guide[guide.time == "computed"].chapter}
    assert set(phases.chapter) == timed and (phases["T4 min"] > 0).all()
    # chapter 30's check at the plan's 100 held-out prompts: 2 sets of the clean model, 3 per backdoor (2 backdoors)
    check = phases[(phases.chapter == "30") & phases.phase.str.startswith("check")]
    assert check["UNet rows"].sum() == (2 * 100 + 2 * (3 * 100 + 8)) * 25 * 2


def test_a_measurement_without_the_plans_setting_is_an_error(tmp_path):
    folder = tmp_path / "12_ticoe"
    folder.mkdir()
    pd.DataFrame({"setting": ["fp32"], "optimizer": ["adam"], "gradient checkpointing": [False],
                  "s per iteration": [0.2], "s per image": [None], "peak allocated GiB": [22.0]}).to_csv(
        folder / "gpu_memory_sd14_measured.csv", index=False)
    with pytest.raises(ValueError, match="adafactor"):
        costs.ticoe_measured(tmp_path)
    with pytest.raises(FileNotFoundError):
        costs.ticoe_measured(tmp_path / "nowhere")
