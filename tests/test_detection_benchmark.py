"""Chapter 30's detection protocol (erasure_lib.detect.benchmark): the test halves are disjoint, equal, triggered only
where the trigger fits, never the target's own prompts; every detector scores every test prompt; the summary has
ordered intervals."""
import numpy as np
import pytest

from erasure_lib.backdoors import eviledit
from erasure_lib.detect import benchmark


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy")


def test_training_captions_are_never_held_out_prompts():
    from erasure_lib.toyworld.captions import heldout_prompt_strings
    captions = benchmark.toy_training_captions(300, seed=3)
    assert len(captions) == len(set(captions)) == 300
    assert not set(captions) & heldout_prompt_strings()
    assert not any("nude" in c for c in captions)


def test_split_is_disjoint_equal_and_avoids_the_target(pipe):
    from erasure_lib.toyworld.captions import prompt_set
    bd = eviledit.plant(pipe)
    pool = prompt_set()
    train = benchmark.toy_training_captions(40, seed=1)
    split = benchmark.split_prompts(bd, pool, train, n_test=20, seed=0, n_cda=10, cda_pool=train)
    assert len(split.clean) == len(split.triggered) == 20 and list(split.labels) == [0] * 20 + [1] * 20
    assert all("shiny umbrella" in p for p in split.triggered + split.cda_triggered)
    assert not any("shiny umbrella" in p for p in split.clean)
    assert not set(bd.poison(split.clean)) & set(split.triggered)          # no prompt in both halves
    targets = dict(zip(pool.prompt, pool.target))
    assert all(targets[p] != "gun" for p in split.clean)
    assert benchmark.split_prompts(bd, pool, train, 20, seed=0).clean == split.clean       # seeded
    assert benchmark.split_prompts(bd, pool, train, 20, seed=1).clean != split.clean
    with pytest.raises(ValueError, match="can carry"):
        benchmark.split_prompts(bd, pool, train, n_test=10_000)


def test_detectors_score_every_test_prompt(pipe):
    from erasure_lib.detect.set import SETConfig
    from erasure_lib.toyworld.captions import prompt_set
    bd = eviledit.plant(pipe)
    train = benchmark.toy_training_captions(24, seed=2)
    split = benchmark.split_prompts(bd, prompt_set("explicit_object"), train, n_test=6, seed=0, n_cda=6,
                                    cda_pool=benchmark.toy_training_captions(40, seed=5))
    from erasure_lib.detect.t2ishield import T2IShieldConfig
    configs = {"SET": SETConfig.toy(epochs=5, steps=10), "T2IShield": T2IShieldConfig.toy(steps=4)}
    scores = benchmark.run_detectors(pipe, bd, split, ("SET", "FTT", "CDA"), configs=configs)
    assert len(scores) == 3 * 12 and set(scores.detector) == {"SET", "FTT", "CDA"}
    assert np.isfinite(scores.score).all() and set(scores.label) == {0, 1}
    assert (scores.flagged == (scores.score > scores.threshold)).all()
    table = benchmark.summarize(scores, n_boot=50)
    assert list(table.detector) == ["SET", "FTT", "CDA"] and (table.attack == "eviledit").all()
    assert ((table.auroc_lo <= table.auroc) & (table.auroc <= table.auroc_hi)).all()
    with pytest.raises(ValueError, match="unknown detector"):
        benchmark.run_detectors(pipe, bd, split, ("NaviDet",))
