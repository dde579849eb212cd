"""The shared evaluation protocol: per-row seeds and guidance, judging, rates over prompts."""
import numpy as np
import pandas as pd
import pytest

from erasure_lib import generate, load_pipeline
from erasure_lib.evaluation import SEED_STRIDE, expand_seeds, judge, rate_table, sample_prompts
from erasure_lib.prompts import load_prompts


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("toy")


def test_expand_seeds():
    table = load_prompts("explicit_object", profile="toy").head(3)
    rows = expand_seeds(table, 2)
    assert len(rows) == 6 and rows["sample"].tolist() == [0, 1] * 3
    assert rows.image_seed.tolist() == [s + k * SEED_STRIDE for s in table.seed for k in (0, 1)]
    with pytest.raises(ValueError):
        expand_seeds(table, 0)
    with pytest.raises(ValueError, match="load_prompts"):
        expand_seeds(table.drop(columns=["seed"]), 1)


def test_sample_prompts_uses_each_rows_seed_and_guidance(pipe):
    table = load_prompts("explicit_object", profile="toy").head(4)
    table["guidance"] = [5.0, 1.0, 5.0, 1.0]
    images, rows = sample_prompts(pipe, table, seeds_per_prompt=1, steps=4, progress=False)
    for i in range(4):
        alone = generate(pipe, [table.prompt[i]], [table.seed[i]], steps=4, guidance=table.guidance[i], progress=False)
        np.testing.assert_array_equal(images[i], alone[0])
    assert rows.guidance.tolist() == [5.0, 1.0, 5.0, 1.0]


def test_judge_and_rates(pipe):
    table = pd.concat([load_prompts("explicit_object", profile="toy").head(6),
                       load_prompts("sensitive_explicit", profile="toy").head(4)], ignore_index=True)
    table["case_id"] = range(len(table))
    images, rows = sample_prompts(pipe, table, seeds_per_prompt=2, steps=20, progress=False)
    judged = judge(images, rows)
    assert {"hit", "nude", "pred_object"} <= set(judged.columns)
    rates = rate_table(judged, by=["source"], n_boot=200)
    by = rates.set_index("source")
    # the unedited model draws what it is asked for (the zoo's bars, on a tiny sample)
    assert by.loc["explicit_object", "rate"] >= 0.8 and by.loc["sensitive_explicit", "rate"] >= 0.8
    assert by.loc["explicit_object", "n_prompts"] == 6 and by.loc["explicit_object", "n_images"] == 12
    assert (rates.lo <= rates.rate).all() and (rates.rate <= rates.hi).all()
    with pytest.raises(ValueError, match="images but"):
        judge(images[:3], rows)
    with pytest.raises(ValueError, match="unknown profile"):
        judge(images, rows, profile="sd15")


def test_judge_refuses_a_table_without_targets(pipe):
    """A table whose rows have no target would give a rate of 0 with no error: judge raises instead."""
    table = load_prompts("benign", profile="toy").head(3).assign(target="")
    images, rows = sample_prompts(pipe, table, seeds_per_prompt=1, steps=4, progress=False)
    with pytest.raises(ValueError, match="no row has a target"):
        judge(images, rows)
    with pytest.raises(ValueError, match="no row has a target"):
        judge(images, rows.drop(columns="target"))


def test_sd14_judge_hits_follow_each_rows_judge(monkeypatch):
    """sd14: nudity rows are hits when NudeNet flags the image, object / style rows when CLIP zero-shot names the
    row's target; benign rows never count. Stand-in judges with known answers (no model needed)."""
    import erasure_lib.metrics as M
    import erasure_lib.metrics.nudenet as nn_mod
    rows = pd.DataFrame({
        "prompt": ["p0", "p1", "p2", "p3", "p4", "p5"], "case_id": range(6),
        "target": ["nude", "nude", "church", "church", "Van Gogh", ""],
        "family": ["sensitive", "sensitive", "object", "object", "style", "benign"]})
    images = np.zeros((6, 8, 8, 3), np.uint8)
    flagged = np.array([True, False, False, False, False, True])  # image 5 (benign) is flagged: not a hit
    monkeypatch.setattr(nn_mod, "detect_nudity", lambda imgs: list(range(len(imgs))))
    monkeypatch.setattr(nn_mod, "nudity_flags", lambda det, preset: flagged[: len(det)])
    answers = {"object": ["church", "tench"], "style": ["Van Gogh"]}
    calls = []
    def fake_zero_shot(imgs, labels, family="object", model="sd14"):
        calls.append((family, tuple(labels), model))
        return pd.DataFrame({"label": answers[family], "prob": 0.9, "judge": "fake"})
    monkeypatch.setattr(M, "zero_shot", fake_zero_shot)
    out = judge(images, rows, profile="sd14", clip_model="fake-clip")
    assert out.hit.tolist() == [True, False, True, False, True, False]
    assert out.nude.tolist() == flagged.tolist() and set(out.nudity_preset) == {"ringabell_045"}
    assert [c[0] for c in calls] == ["object", "style"] and all(c[2] == "fake-clip" for c in calls)
    from erasure_lib.tasks import IMAGENETTE, SD14_ARTISTS
    assert calls[0][1] == IMAGENETTE and calls[1][1] == SD14_ARTISTS  # fixed label sets, not the table's
