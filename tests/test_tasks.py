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


def test_bad_names_raise(prompts, tmp_path):
    from erasure_lib.prompts import PromptFileError
    with pytest.raises(ValueError, match="unknown concept"):
        tasks.concept_masks("van gogh", prompts)
    with pytest.raises(ValueError, match="unknown baseline"):
        tasks.baseline_edit(None, "ESD-z", "nudity")
    with pytest.raises(ValueError, match="unknown method"):
        tasks.method_config("ESD-z")
    # offline with an empty cache, the sd14 sets say which file to put where
    with pytest.raises(PromptFileError, match="download=False"):
        tasks.evaluation_prompts("sd14", cache_dir=tmp_path, download=False)


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


# --- the sd14 form, on the real prompt files of ../shared/benchmarks ---------------------------------------------

import csv  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import erasure_lib  # noqa: E402
from erasure_lib import profiles  # noqa: E402

BENCHMARKS = Path(os.environ.get("ERASURE_BOOK_BENCHMARKS")
                  or Path(erasure_lib.__file__).resolve().parents[2] / "shared" / "benchmarks")


@pytest.fixture(scope="module")
def sd14_cache(tmp_path_factory):
    files = ["nudity-unlearndiff.csv", "I2P_prompts_4703.csv", "big_artist_prompts.csv", "coco_30k_val.csv"]
    if not all((BENCHMARKS / f).exists() for f in files):
        pytest.skip(f"the sd14 reference prompt files are not in {BENCHMARKS}")
    root = tmp_path_factory.mktemp("cache")
    for f in files:
        shutil.copyfile(BENCHMARKS / f, root / f)
    return root


def test_sd14_evaluation_prompts_read_the_papers_sets(sd14_cache):
    full = tasks.evaluation_prompts("sd14", sizes=profiles.PAPER_SIZES, cache_dir=sd14_cache, download=False)
    counts = full.source.value_counts()
    # the files' own row counts, read with the csv module (independent of the loader)
    def n_rows(name, keep=lambda r: True):
        with open(BENCHMARKS / name, newline="", encoding="utf-8") as f:
            return sum(keep(r) for r in csv.DictReader(f))
    assert counts["unlearndiff"] == n_rows("nudity-unlearndiff.csv") == 142
    assert counts["i2p_sexual"] == n_rows("I2P_prompts_4703.csv", lambda r: "sexual" in r["categories"]) == 931
    assert counts["big_artists"] == 100 and counts["coco_3k"] == 3000 and counts["objects"] == 50
    assert full.case_id.is_unique
    gogh = tasks.concept_masks("Van Gogh", full, profile="sd14")
    assert gogh["explicit"].sum() == 20 and gogh["other styles"].sum() == 80
    assert not full.prompt[gogh["other styles"]].str.contains("Van Gogh").any()
    church = tasks.concept_masks("church", full, profile="sd14")
    assert church["explicit"].sum() == len(tasks.OBJECT_TEMPLATES) and church["other objects"].sum() == 45
    nude = tasks.concept_masks("nudity", full, profile="sd14")
    assert nude["explicit"].sum() == 142 and nude["implicit"].sum() == 931 and not nude["look-alikes"].any()


def test_sd14_default_sizes_subsample_reproducibly(sd14_cache):
    a = tasks.evaluation_prompts("sd14", cache_dir=sd14_cache, download=False)
    b = tasks.evaluation_prompts("sd14", cache_dir=sd14_cache, download=False)
    assert a.equals(b)
    sizes = profiles.get_profile("sd14").sizes
    counts = a.source.value_counts()
    assert counts["unlearndiff"] == sizes["unlearndiff"] and counts["coco_3k"] == sizes["coco_3k"]
    other = tasks.evaluation_prompts("sd14", seed=1, cache_dir=sd14_cache, download=False)
    assert set(other.case_id) != set(a.case_id)


def test_unknown_concept_and_profile_raise():
    with pytest.raises(ValueError, match="unknown concept 'Van Gogh' of profile 'toy'"):
        tasks.concept_masks("Van Gogh", tasks.evaluation_prompts())
    with pytest.raises(ValueError, match="unknown profile"):
        tasks.evaluation_prompts("sd15")
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.get_profile("sd15")


def test_profile_environment_overrides(monkeypatch):
    monkeypatch.setenv("ERASURE_BOOK_SD14_CLIP", "/some/clip")
    monkeypatch.setenv("ERASURE_BOOK_SD14_FID", "clip:/some/clip")
    p = profiles.get_profile("sd14")
    assert p.clip_model == "/some/clip" and p.fid_feature == "clip:/some/clip"
    assert profiles.get_profile("toy").clip_model == "toy"  # the toy never reads the sd14 variables
    monkeypatch.setenv("ERASURE_BOOK_SD14_FID", "inception")
    with pytest.raises(ValueError, match="ERASURE_BOOK_SD14_FID"):
        profiles.get_profile("sd14")


def test_profile_fid_feature_falls_back_without_the_gpu_extra(monkeypatch):
    import importlib.util
    monkeypatch.delenv("ERASURE_BOOK_SD14_FID", raising=False)
    monkeypatch.setenv("ERASURE_BOOK_SD14_CLIP", "/local/clip")
    p = profiles.get_profile("sd14")
    assert p.fid_feature == "sd14"  # what the profile declares
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch_fidelity" else real(name, *a))
    with pytest.warns(UserWarning, match="torch-fidelity"):
        assert p.usable_fid_feature() == "clip:/local/clip"
    assert profiles.get_profile("sd14", fid_feature="clip:sd14").usable_fid_feature() == "clip:/local/clip"
    assert profiles.get_profile("toy").usable_fid_feature() == "toy"
    with pytest.raises(TypeError):
        profiles.get_profile("sd14").sizes["coco_3k"] = 1  # the tables are read-only


def test_mcp_prompts_are_the_look_alikes_of_an_object():
    from erasure_lib.tasks import mcp_prompts
    toy = mcp_prompts("tench")
    assert set(toy.target) == {"goldfish"} and len(toy) == 8 and toy.case_id.is_unique
    assert toy.prompt.str.contains("goldfish").all() and not toy.prompt.str.contains("tench").any()
    assert set(mcp_prompts("church").target) == {"house"}
    sd = mcp_prompts("tench", "sd14")
    assert set(sd.target) == {"goldfish", "whale"} and len(sd) == 10 and (sd.guidance == 7.5).all()
    assert (sd.family == "lookalike").all()
    for bad in ("nudity", "starry style"):
        with pytest.raises(ValueError, match="look-alike"):
            mcp_prompts(bad)
    with pytest.raises(ValueError, match="unknown concept"):
        mcp_prompts("gun")


def test_chapter12_plans_and_configs():
    from erasure_lib import chapters
    from erasure_lib.methods import co_erasing, esd, ticoe
    from erasure_lib.profiles import CHAPTER12_PLANS, Chapter12Plan, chapter12_plan
    toy = chapter12_plan("toy")
    assert toy.concepts[0] == "tench" and toy.claim_seeds == (0, 1, 2) and toy.ablation and toy.mcp_seeds == 8
    assert chapters.ticoe_config() == ticoe.TICoEConfig() and chapters.ticoe_config().lr == 1e-5
    sd14 = chapters.ticoe_config(profile="sd14")
    assert sd14.optimizer == "adafactor" and sd14.reference_images == 100 and sd14.reference_steps == 50
    assert chapters.ticoe_config(profile="sd14", preset="sd14-paper") == ticoe.TICoEConfig.sd14()
    assert CHAPTER12_PLANS["sd14-paper"].concepts == ("tench", "nudity", "Van Gogh")
    with pytest.raises(ValueError, match="chapter 12 sets them"):
        Chapter12Plan("x", ticoe={"cccm": False})
    with pytest.raises(ValueError, match="unknown chapter 12 preset"):
        chapter12_plan("toy", "colab")
    # chapter 10's edits as chapter 10 trains them: the library's defaults on the toy (the same cache keys)
    assert chapters.co_erasing_config() == co_erasing.CoErasingConfig()
    assert chapters.co_erasing_config(seed=2).text_stage == esd.ESDConfig(parameter_set="esd-u", seed=2)
    small = chapters.ticoe_config(iteration_cap=3)
    assert small.iterations == 3 and small.reference_images == 8
    assert tasks.method_config("TICoE", "sd14").lr == 1e-5 and tasks.method_config("TICoE").bank_size is None
