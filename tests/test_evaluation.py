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
