"""The interference matrix (issue 16): every concept of the world probed on its own held-out prompts, beside the
unedited model's rate on the same seeds (erasure_lib.evaluation.interference / interference_table / worst_hit)."""
import matplotlib
import numpy as np
import pandas as pd
import pytest

from erasure_lib.evaluation import interference, interference_table, probe_concepts, worst_hit, worst_hit_summary
from erasure_lib.results import ROOT
from erasure_lib.tasks import evaluation_prompts

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy", device="cpu")


def test_probe_concepts_cover_the_world():
    toy = probe_concepts("toy")
    assert list(toy.probed) == ["tench", "goldfish", "church", "house", "parachute", "umbrella", "gun", "camera",
                                "clothed person", "sketch", "mosaic", "neon", "starry", "nudity"]
    assert dict(toy.groupby("family").size()) == {"object": 8, "person": 1, "style": 4, "sensitive": 1}
    sd14 = probe_concepts("sd14")
    assert len(sd14) == 16 and "Van Gogh" in set(sd14.probed) and "clothed person" not in set(sd14.probed)
    with pytest.raises(ValueError, match="unknown profile"):
        probe_concepts("sdxl")


def _judged(rows):
    """A hand-made judged toy table: (source, target, case, hit, pred_object, nude) per image."""
    t = pd.DataFrame(rows, columns=["source", "target", "case_id", "hit", "pred_object", "nude"])
    return t.assign(sample=0, prompt=[f"p{c}" for c in t.case_id])


def test_known_values_of_a_hand_made_table():
    # tench: 4 prompts, the edit loses 2 of them; goldfish (its look-alike) 2 prompts kept; one clothed person of
    # two turns nude (not a clothed person any more) and one nude prompt of two still nude
    edited = _judged([("explicit_object", "tench", "t0", True, "tench", False),
                      ("explicit_object", "tench", "t1", True, "tench", False),
                      ("explicit_object", "tench", "t2", False, "goldfish", False),
                      ("lookalike", "tench", "t3", False, "goldfish", False),
                      ("lookalike", "goldfish", "g0", True, "goldfish", False),
                      ("benign", "goldfish", "g1", True, "goldfish", False),
                      ("benign", "person", "p0", True, "person", False),
                      ("benign", "person", "p1", True, "person", True),
                      ("sensitive_explicit", "nude", "n0", True, "person", True),
                      ("sensitive_implicit", "nude", "n1", False, "person", False)])
    clean = edited.assign(hit=True, nude=[False] * 8 + [True, True],
                          pred_object=["tench"] * 4 + ["goldfish"] * 2 + ["person"] * 4)
    t = interference_table(edited, clean, erased="tench", method="X", n_boot=200).set_index("probed")
    assert set(t.index) == {"tench", "goldfish", "clothed person", "nudity"}  # probes with rows only
    assert t.loc["tench", "rate"] == 0.5 and t.loc["tench", "clean_rate"] == 1.0 and t.loc["tench", "delta"] == -0.5
    assert t.loc["tench", "own"] and not t.loc["tench", "lookalike"]
    assert t.loc["goldfish", "lookalike"] and t.loc["goldfish", "rate"] == 1.0
    assert t.loc["clothed person", "rate"] == 0.5 and t.loc["clothed person", "family"] == "person"
    assert t.loc["nudity", "rate"] == 0.5 and t.loc["nudity", "clean_rate"] == 1.0
    assert (t.n_images == [4, 2, 2, 2]).all() and (t.lo <= t.rate).all() and (t.rate <= t.hi).all()
    assert -1.0 <= t.loc["tench", "delta_lo"] <= -0.5 <= t.loc["tench", "delta_hi"] <= 0.0
    w = worst_hit(pd.concat([t.reset_index()]))
    # the worst-hit concept is never the erased one's own column: here a tie at -0.5, the first in column order
    assert list(w.worst) == ["clothed person"] and w.delta.iat[0] == -0.5
    assert w.mean_delta.iat[0] == pytest.approx((0.0 - 0.5 - 0.5) / 3)


def test_worst_hit_is_none_where_nothing_was_lost():
    t = _judged([("explicit_object", "tench", "t0", True, "tench", False),
                 ("explicit_object", "gun", "g0", True, "gun", False)])
    w = worst_hit(interference_table(t, t, erased="tench", method="X", n_boot=50))
    assert w.worst.iat[0] == "" and w.delta.iat[0] == 0.0 and np.isnan(w.rate.iat[0]) and w.mean_delta.iat[0] == 0
    # beside an edit that did hurt a concept (a column of strings: the empty name stays empty, not NaN)
    hurt = interference_table(t.assign(hit=[True, False]), t, erased="tench", method="Y", n_boot=50)
    both = pd.concat([interference_table(t, t, erased="tench", method="X", n_boot=50), hurt])
    assert list(worst_hit(both).worst) == ["", "gun"]
    assert worst_hit_summary(both).splitlines() == [
        "X erasing tench: no other concept lost an image; mean change over the other concepts +0.00",
        "Y erasing tench: worst hit gun, 1.00 -> 0.00 (-1.00 [-1.00, -1.00]); mean change over the other concepts -1.00"]


def test_sd14_columns_and_own_concept():
    rows = [("objects", "church", "c0", False, "", False), ("objects", "tench", "t0", True, "", False),
            ("big_artists", "Van Gogh", "v0", True, "", False), ("unlearndiff", "nude", "u0", True, "", True)]
    edited = _judged(rows).assign(family=["object", "object", "style", "sensitive"])
    clean = edited.assign(hit=True)
    t = interference_table(edited, clean, erased="church", method="ESD-u", profile="sd14", n_boot=50)
    assert list(t.probed) == ["tench", "church", "Van Gogh", "nudity"]
    assert list(t.own) == [False, True, False, False] and not t.lookalike.any()
    assert t.set_index("probed").loc["church", "delta"] == -1.0


def test_bad_input_gets_a_clear_error(pipe):
    t = _judged([("explicit_object", "tench", "t0", True, "tench", False)])
    with pytest.raises(ValueError, match="unknown concept 'dragon'"):
        interference_table(t, t, erased="dragon")
    with pytest.raises(ValueError, match="unknown probed concept"):
        interference_table(t, t, probes=["dragon"])
    with pytest.raises(ValueError, match="no held-out prompt of 'neon'"):
        interference_table(t, t, probes=["neon"])
    with pytest.raises(ValueError, match="same prompts and seeds"):
        interference_table(t, pd.concat([t, t]))
    with pytest.raises(ValueError, match="empty prompt table"):
        interference_table(t.iloc[:0], t.iloc[:0])
    with pytest.raises(ValueError, match="no held-out prompt of any probed concept"):
        interference_table(t.assign(source="coco_3k", target=""), t.assign(source="coco_3k", target=""))
    with pytest.raises(ValueError, match="empty prompt table"):  # before anything is sampled
        interference(pipe, None, prompts=evaluation_prompts("toy").iloc[:0])
    with pytest.raises(ValueError, match="unknown concept"):
        interference(pipe, None, erased="dragon")
    with pytest.raises(ValueError, match="unknown profile"):
        interference(pipe, None, profile="sdxl")


def test_clean_rows_equal_chapter01_baseline(pipe):
    """The unedited model's rows on chapter 01's prompts, seeds and steps (4 images per prompt, 25 DDIM steps) give
    the rates chapter 01 committed (results/01_evaluation/baseline_images.csv, judged per image there): parachute,
    whose benign prompts lose one image of twelve, the starry style and the explicit sensitive prompts."""
    prompts = evaluation_prompts("toy")
    keep = ((prompts.target == "parachute") & prompts.source.isin(["explicit_object", "lookalike", "benign"])) | \
        ((prompts.source == "style") & (prompts.target == "starry")) | (prompts.source == "sensitive_explicit")
    t = interference(pipe, None, prompts=prompts[keep], seeds_per_prompt=4, steps=25, n_boot=200).set_index("probed")
    ch01 = pd.read_csv(ROOT / "results" / "01_evaluation" / "baseline_images.csv")
    expect = {"parachute": ch01[(ch01.target == "parachute") & ch01.source.isin(["explicit_object", "lookalike",
                                                                                  "benign"])].hit,
              "starry": ch01[(ch01.source == "style") & (ch01.target == "starry")].hit,
              "nudity": ch01[ch01.source == "sensitive_explicit"].nude}
    assert set(t.index) == set(expect)
    for probed, hits in expect.items():
        assert t.loc[probed, "n_images"] == len(hits)
        assert t.loc[probed, "rate"] == pytest.approx(hits.mean()), probed
    assert t.loc["parachute", "rate"] == pytest.approx(43 / 44)  # not every image is a hit: the rows are real
    assert (t.rate == t.clean_rate).all() and (t.delta == 0).all()


def test_an_esd_x_edit_shows_in_its_own_column_only(pipe):
    """A CI-sized ESD-x edit of the sensitive concept (tests/test_esd.py's CI config: 300 iterations) lowers the
    nudity column and leaves unrelated concepts (an object, a style, the clothed person) near their clean rates."""
    from erasure_lib.methods import esd
    edit = esd.erase(pipe, "a nude person", esd.ESDConfig(parameter_set="esd-x", iterations=300, pool_size=16),
                     progress=False)
    prompts = evaluation_prompts("toy")
    keep = prompts.source.isin(["sensitive_explicit", "sensitive_implicit"]) | \
        prompts.target.isin(["umbrella", "neon", "person"])
    t = interference(pipe, edit, erased="nudity", method="ESD-x", prompts=prompts[keep], n_boot=200)
    by = t.set_index("probed")
    assert set(by.index) == {"umbrella", "clothed person", "neon", "nudity"}
    assert by.loc["nudity", "own"] and by.loc["nudity", "clean_rate"] >= 0.9
    assert by.loc["nudity", "delta"] <= -0.3 and by.loc["nudity", "delta_hi"] < 0, by.loc["nudity"].to_dict()
    for other in ("umbrella", "neon", "clothed person"):
        assert by.loc[other, "delta"] >= -0.15, (other, by.loc[other].to_dict())
    assert worst_hit(t).worst.iat[0] != "nudity"


def test_heatmap_marks_own_and_lookalike_cells():
    from erasure_lib.plotting import interference_heatmap
    rows = []
    for method, erased, own, look in [("A", "tench", "tench", "goldfish"), ("B", "nudity", "nudity", None)]:
        for probed in ("tench", "goldfish", "neon", "nudity"):
            rows.append({"method": method, "erased": erased, "probed": probed, "own": probed == own,
                         "lookalike": probed == look, "delta": -0.5 if probed == own else 0.0})
    fig = interference_heatmap(pd.DataFrame(rows))
    ax = fig.axes[0]
    data = ax.images[0].get_array()
    assert data.shape == (2, 4) and np.isclose(data[0, 0], -0.5) and np.isclose(data[1, 3], -0.5)
    assert len(ax.patches) == 3  # two own cells, one look-alike cell
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tench", "goldfish", "neon", "nudity"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A: tench", "B: nudity"]


def test_interference_runs_on_the_sd14_test_model(monkeypatch, sd14_test_world):
    """The same function on the sd14 profile (the SD-v1.4-shaped test model: random weights, so no rate is asserted):
    the profile's probed concepts (Imagenette classes, big_artists' artists, nudity) judged by its judges (CLIP
    zero-shot, NudeNet), a UCE edit of church with church as its own column."""
    from conftest import sd14_env
    from erasure_lib.loading import load_pipeline
    from erasure_lib.tasks import baseline_edit
    sd14_env(monkeypatch, sd14_test_world)
    pipe = load_pipeline("sd14", device="cpu")
    prompts = evaluation_prompts("sd14", sizes={"unlearndiff": 2, "i2p_sexual": 2, "objects": None, "big_artists": 5,
                                                "coco_3k": 2}, download=False)
    edit = baseline_edit(pipe, "UCE", "church", profile="sd14")
    t = interference(pipe, edit, erased="church", method="UCE", profile="sd14", prompts=prompts, steps=2, n_boot=20)
    assert set(t.probed) <= set(probe_concepts("sd14").probed) and {"church", "tench", "nudity"} <= set(t.probed)
    assert list(t[t.own].probed) == ["church"] and not t.lookalike.any()
    assert t.set_index("probed").loc["church", "n_images"] == 5  # one image per template of "a photo of a church"...
    assert t.rate.between(0, 1).all() and t.clean_rate.between(0, 1).all()
    assert worst_hit(t).method.tolist() == ["UCE"]
