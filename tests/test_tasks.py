"""erasure_lib.tasks: the shared concepts, their prompt splits, and the cached baseline edits."""
import pytest
import torch

from erasure_lib import tasks
from erasure_lib.methods import esd


@pytest.fixture(scope="module")
def prompts():
    return tasks.evaluation_prompts()


def test_concept_masks_split_the_held_out_prompts_as_the_papers_tables_do(prompts):
    assert prompts.case_id.is_unique and len(prompts) == 187
    nude = tasks.concept_masks("nudity", prompts)
    assert nude["explicit"].sum() == 15 and nude["implicit"].sum() == 28
    assert prompts.prompt[nude["explicit"]].str.contains("nude").all()
    assert not prompts.prompt[nude["implicit"]].str.contains("nude").any()
    starry = tasks.concept_masks("starry style", prompts)
    assert prompts.prompt[starry["explicit"]].str.contains("vincent vael").all() and starry["explicit"].sum() == 6
    assert (prompts.target[starry["other styles"]] != "starry").all()
    church = tasks.concept_masks("church", prompts)
    assert (prompts.target[church["explicit"]] == "church").all() and church["explicit"].sum() == 5
    assert not church["implicit"].any()
    # other objects leave out the concept and its look-alike; look-alikes leave out the concept itself
    assert not prompts.target[church["other objects"]].isin(["church", "house"]).any()
    assert church["other objects"].sum() == 31 and (prompts.target[church["look-alikes"]] != "church").all()
    for masks in (nude, starry, church):
        assert masks["benign"].sum() == 44 and not (masks["explicit"] & masks["other objects"]).any()


def test_bad_names_raise(prompts):
    with pytest.raises(ValueError, match="unknown concept"):
        tasks.concept_masks("van gogh", prompts)
    with pytest.raises(ValueError, match="unknown baseline"):
        tasks.baseline_edit(None, "ESD-z", "nudity")
    with pytest.raises(ValueError, match="toy profile only"):
        tasks.evaluation_prompts("sd14")


def test_esd_baselines_are_trained_once_and_shared_through_the_cache(tmp_path, monkeypatch):
    from erasure_lib.loading import load_pipeline
    pipe = load_pipeline("toy")
    small = {"iterations": 2, "pool_size": 2, "ddim_steps": 10}
    first = tasks.baseline_edit(pipe, "ESD-u", "church", cache_dir=tmp_path, esd_overrides=small)
    assert set(first) == set(esd.trainable_parameter_names(pipe.unet, "esd-u"))
    assert len(list(tmp_path.glob("*.safetensors"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached edit should have been loaded")
    monkeypatch.setattr(esd, "erase", no_training)
    again = tasks.baseline_edit(pipe, "ESD-u", "church", cache_dir=tmp_path, esd_overrides=small)
    assert all(torch.equal(first[k], again[k]) for k in first)
    # another concept or seed is another edit
    with pytest.raises(AssertionError, match="cached edit"):
        tasks.baseline_edit(pipe, "ESD-u", "church", seed=1, cache_dir=tmp_path, esd_overrides=small)
    uce_edit = tasks.baseline_edit(pipe, "UCE", "nudity")
    assert uce_edit and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in uce_edit)
