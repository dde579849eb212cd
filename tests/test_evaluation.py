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


def test_sample_edit_caches_images_per_edit_and_serves_a_subset_from_a_larger_table(pipe, tmp_path, monkeypatch):
    """Images sampled once are read back (nothing sampled), equal to sampling the edited model directly; another
    edit or other seeds sample anew; a cached larger table serves its sub-table; a damaged file is resampled."""
    import torch

    from erasure_lib import evaluation
    from erasure_lib.methods import edited
    table = load_prompts("explicit_object", profile="toy").head(5)
    table["case_id"] = range(len(table))
    name = next(n for n, _ in pipe.unet.named_parameters() if n.endswith("attn2.to_v.weight"))
    weight = dict(pipe.unet.named_parameters())[name].detach()
    edit = {name: weight * 0.0}  # no cross-attention value in one block: the images change
    with edited(pipe, edit):
        direct, _ = sample_prompts(pipe, table, seeds_per_prompt=2, steps=4, progress=False)
    images, rows = evaluation.sample_edit(pipe, edit, table, seeds_per_prompt=2, steps=4, cache_dir=tmp_path)
    np.testing.assert_array_equal(images, direct)
    assert torch.equal(dict(pipe.unet.named_parameters())[name].detach(), weight)  # the original weights are back
    files = list((tmp_path / evaluation.SAMPLE_CACHE).glob("*.npz"))
    assert len(files) == 1

    calls = []
    real = evaluation.sample_prompts
    monkeypatch.setattr(evaluation, "sample_prompts", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, again_rows = evaluation.sample_edit(pipe, edit, table, seeds_per_prompt=2, steps=4, cache_dir=tmp_path)
    assert calls == [] and again_rows.equals(rows)
    np.testing.assert_array_equal(again, direct)

    unedited, _ = evaluation.sample_edit(pipe, {}, table, seeds_per_prompt=2, steps=4, cache_dir=tmp_path)
    assert calls == [1] and not np.array_equal(unedited, direct)
    evaluation.sample_edit(pipe, edit, table.assign(seed=table.seed + 1), seeds_per_prompt=2, steps=4,
                           cache_dir=tmp_path)
    assert calls == [1, 1]

    part = table.iloc[[3, 1]]
    sub, sub_rows = evaluation.sample_edit(pipe, edit, part, seeds_per_prompt=2, steps=4, cache_dir=tmp_path,
                                           within=table)
    assert calls == [1, 1] and sub_rows.case_id.tolist() == [3, 3, 1, 1]
    np.testing.assert_array_equal(sub, direct[[6, 7, 2, 3]])

    files[0].write_bytes(b"not an npz")
    fresh, _ = evaluation.sample_edit(pipe, edit, table, seeds_per_prompt=2, steps=4, cache_dir=tmp_path)
    assert calls == [1, 1, 1]
    np.testing.assert_array_equal(fresh, direct)


def _judged(hits, case_ids, samples=None):
    n = len(hits)
    return pd.DataFrame({"case_id": case_ids, "sample": samples if samples is not None else [0] * n,
                         "prompt": [f"p{c}" for c in case_ids], "hit": hits})


def test_paired_difference_of_known_tables():
    from erasure_lib.evaluation import paired_difference
    cases = [0, 0, 1, 1, 2, 2, 3, 3]
    a = _judged([1, 1, 1, 0, 0, 0, 1, 0], cases, [0, 1] * 4)   # rate 4/8
    b = _judged([0, 0, 1, 0, 0, 0, 0, 0], cases, [0, 1] * 4)   # rate 1/8
    est = paired_difference([(a, b, np.ones(8, bool))], n_boot=2000)
    assert est.value == pytest.approx(3 / 8) and est.n == 8
    # per prompt the differences are 1, 0, 0, 0.5: a resample of 4 prompts has a mean in [0, 1], never below 0
    assert 0 <= est.lo < 3 / 8 < est.hi <= 1
    same = paired_difference([(a, a, np.ones(8, bool))], n_boot=200)
    assert (same.value, same.lo, same.hi) == (0, 0, 0)
    # two repeats pooled, a mask: only prompts 0 and 1 (differences 1, 1 | 0, 0 and again) -> 0.5
    m = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    assert paired_difference([(a, b, m), (a, b, m)], n_boot=0).value == pytest.approx(0.5)
    # every prompt the same positive difference: the interval is that point
    one = paired_difference([(_judged([1] * 4, [0, 1, 2, 3]), _judged([0] * 4, [0, 1, 2, 3]), np.ones(4, bool))])
    assert (one.value, one.lo, one.hi) == (1, 1, 1)
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference([(a, b.iloc[::-1], np.ones(8, bool))])
    with pytest.raises(ValueError, match="mask"):
        paired_difference([(a, b, np.ones(3, bool))])
    with pytest.raises(ValueError, match="no row"):
        paired_difference([(a, b, np.zeros(8, bool))])
