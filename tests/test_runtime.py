"""erasure_lib.runtime: the counted work against the methods' real UNet calls, the published throughput it prices
them with, and the chapter plans it sizes."""
import dataclasses

import pytest

from erasure_lib import load_ip_adapter, load_pipeline, runtime
from erasure_lib.methods import co_erasing, esd, trce
from erasure_lib.profiles import CHAPTER10_PLANS, chapter10_plan, chapter11_plan, get_profile
from erasure_lib.tasks import method_config


@pytest.fixture(scope="module")
def toy_pipe():
    return load_pipeline("toy")


@pytest.fixture(scope="module")
def toy_ip_pipe():
    return load_ip_adapter(load_pipeline("toy"), "toy")


@pytest.fixture
def unpadded(monkeypatch):
    """No CPU row padding: the calls the methods make on a GPU (sampling.row_block is 1 there)."""
    monkeypatch.setenv("ERASURE_BOOK_ROW_BLOCK", "1")


def _expected(work):
    out = []
    for c in work.calls:
        if c.kind != "decode":
            out += [(c.rows, c.kind == "train")] * c.calls
    return sorted(out)


@pytest.mark.parametrize("config", [
    esd.ESDConfig(iterations=6, pool_size=5, sample_batch_size=2, ddim_steps=4),  # recorded pool: no frozen calls
    esd.ESDConfig(parameter_set="esd-u", iterations=6, pool_size=3, ddim_steps=4, sample_from="trained",
                  refresh_every=4, timestep="bin"),                               # the paper's: 2 pools, frozen calls
    esd.ESDConfig(iterations=5, pool_size=3, ddim_steps=4, start_guidance=1.0),   # no CFG in the pool
], ids=["recorded", "trained-bin", "no-cfg"])
def test_esd_work_is_the_calls_esd_makes(toy_pipe, unpadded, config):
    with runtime.UNetCalls(toy_pipe.unet) as counted:
        esd.erase(toy_pipe, "a nude person", config, progress=False)
    assert sorted(counted.calls) == _expected(runtime.esd(config))


@pytest.mark.parametrize("variant, options, ready_text_stage", [
    ("full", {}, True),
    ("image_only", {}, True),
    ("full", {"start_guidance": 3.0}, True),                  # a CFG x_t pool
    ("text_image", {"bug_compatible_sampling": True}, True),  # the reference's upward walk, conditional only
    ("full", {}, False),                                       # the text stage trained inside erase
], ids=["full", "image-only", "cfg-pool", "bug-compatible", "with-text-stage"])
def test_co_erasing_work_is_the_calls_co_erasing_makes(toy_pipe, toy_ip_pipe, unpadded, variant, options,
                                                        ready_text_stage):
    text_cfg = esd.ESDConfig(parameter_set="esd-u", iterations=2, pool_size=2, ddim_steps=4)
    text = esd.erase(toy_pipe, "a nude person", text_cfg, progress=False) if ready_text_stage else None
    config = co_erasing.CoErasingConfig(variant=variant, iterations=40, pool_size=3, ddim_steps=4, image_number=5,
                                        image_steps=3, text_stage=text_cfg, **options)
    with runtime.UNetCalls(toy_pipe.unet) as plain, runtime.UNetCalls(toy_ip_pipe.unet) as ip:
        co_erasing.erase(toy_pipe, toy_ip_pipe, "a nude person", config, progress=False,
                         text_edit=None if variant == "image_only" else text)
    # 40 iterations make two target batches (32 + 8): the batching is counted too
    expected = runtime.co_erasing(config, text_stage=not ready_text_stage and variant != "image_only")
    assert sorted(plain.calls + ip.calls) == _expected(expected)


def test_throughput_is_the_published_benchmark():
    # diffusers docs, torch2.0.md: T4 6.9 it/s at batch 1, A100 3.04 it/s at batch 16 (2 x batch rows per it)
    assert runtime.rows_per_second("T4", 2) == pytest.approx(13.8)
    assert runtime.rows_per_second("A100", 32) == pytest.approx(97.28)
    assert runtime.rows_per_second("T4", 32) == pytest.approx(32 / 2.34)  # printed as 2.34 s per iteration
    a, b = runtime.rows_per_second("A100", 8), runtime.rows_per_second("A100", 32)
    assert a < runtime.rows_per_second("A100", 16) < b
    assert runtime.rows_per_second("A100", 1) == runtime.rows_per_second("A100", 2)  # no extrapolation
    with pytest.raises(ValueError, match="unknown GPU"):
        runtime.rows_per_second("H100", 2)


def test_sampling_time_matches_the_benchmark_it_comes_from():
    # 50 steps of 4 images with CFG on a T4, without decodes: 50 iterations at the published 1.79 it/s
    work = runtime.sampling(4, 50, 7.5, 4, decode=False)
    assert work.seconds("T4") == pytest.approx(50 / 1.79)
    assert runtime.sampling(4, 50, 1.0, 4, decode=False).unet_rows() == 200  # no CFG: one row per image


def test_vae_decode_costs_a_few_unet_rows():
    # SD's decoder at 512 px is a few TFLOPs against the UNet's ~0.8 per row: more than one row, less than ten
    assert 1.0 < runtime.decode_rows() < 10.0


def test_evaluation_images_count_the_sets():
    assert runtime.evaluation_images("sd14", CHAPTER10_PLANS["sd14"].sizes) == 40 + 40 + 20 + 10 + 40
    assert runtime.evaluation_images("sd14", CHAPTER10_PLANS["sd14-paper"].sizes) == 142 + 931 + 50 + 100 + 3000
    assert runtime.evaluation_images("sd14") == 48 + 48 + 50 + 100 + 100  # the profile's sizes
    with pytest.raises(ValueError):
        runtime.evaluation_images("toy")


def test_chapter10_trains_every_distinct_edit_once():
    work = runtime.chapter10("sd14", "sd14-paper")
    # ESD: main table 2 parameter sets x 3 concepts + claim seeds 1, 2; curve 250 + 500. Co-Erasing: main 3,
    # ablation 2 (image only, text + image), claim 2; curve 250 + 500. Text stages are the main table's ESD-u.
    assert work.unet_calls("train") == (8 * 1000 + 750) + (7 * 1000 + 750)
    default = runtime.chapter10("sd14")
    assert default.unet_calls("train") == 1000 + 1000  # ESD-u and Co-Erasing on nudity
    # a plan override reaches the count: two more claim seeds train two more ESD-u and Co-Erasing edits
    assert runtime.chapter10("sd14", claim_seeds=(0, 1, 2)).unet_calls("train") == 6000
    # a curve length equal to the default is the main table's edit, as in the notebook's cache
    assert runtime.chapter10("sd14", tradeoff_iterations=(1000,)).unet_rows() == default.unet_rows()
    # without ESD-u in the main table, Co-Erasing's text stage (an ESD-u edit) is still trained, once
    assert runtime.chapter10("sd14", methods=("UCE", "Co-Erasing")).unet_calls("train") == 2000


def test_chapter01_counts_its_probe_and_one_evaluation_pass():
    # 346 prompts x 25 steps x 2 rows, plus the batch-invariance probe: 2 x 6 prompts x 25 steps x 2 rows
    assert runtime.chapter01("sd14").unet_rows() == 346 * 50 + 600


def test_the_default_sd14_plan_is_about_an_hour_on_a_t4():
    minutes = runtime.chapter10("sd14").seconds("T4") / 60
    assert 40 < minutes < 80
    assert runtime.chapter10("sd14").seconds("A100") < runtime.chapter10("sd14").seconds("T4") / 3
    assert runtime.chapter10("sd14", "sd14-paper").seconds("T4") > 20 * runtime.chapter10("sd14").seconds("T4")
    assert runtime.chapter01("sd14").seconds("T4") / 60 < 60


def test_chapter10_plans():
    assert chapter10_plan("toy") == CHAPTER10_PLANS["toy"]
    toy = chapter10_plan("toy")
    assert toy.concepts == ("nudity", "starry style", "church") and toy.claim_seeds == (0, 1, 2) and toy.ablation
    assert not toy.esd and CHAPTER10_PLANS["sd14-paper"].concepts == ("nudity", "Van Gogh", "church")
    sd14 = chapter10_plan("sd14")
    assert sd14.concepts == ("nudity",) and sd14.claim_seeds == (0,)
    cfg = method_config("ESD-u", "sd14", **sd14.esd)
    assert cfg.sample_from == "frozen" and cfg.lr == 1e-5 and cfg.iterations == 1000  # the paper's lr and length
    assert dataclasses.replace(sd14, ablation=True).ablation
    with pytest.raises(ValueError, match="unknown chapter 10 preset"):
        chapter10_plan("sd14", "colab")
    with pytest.raises(ValueError, match="not of profile"):
        chapter10_plan("toy", "sd14-paper")
    with pytest.raises(ValueError, match="unknown profile"):
        chapter10_plan("sd15")
    with pytest.raises(ValueError, match="cannot set iterations"):
        dataclasses.replace(sd14, esd={"iterations": 10})


@pytest.mark.parametrize("options", [{}, {"stage1": False, "regularisation_batch": 1}, {"sample_guidance": 1.0}],
                         ids=["T+V", "V-alone", "no-cfg-trajectories"])
def test_trce_work_is_the_calls_trce_makes(toy_pipe, unpadded, options):
    config = trce.TRCEConfig(**{"seeds_per_prompt": 2, "ddim_steps": 4, "max_early_step": 2, "epochs": 2,
                                "regularisation_trajectories": 3, "regularisation_batch": 2, "sample_batch_size": 3,
                                "prior_size": 50, **options})
    prompts = [("a nude person", "a person"), ("a naked woman on the beach", "a woman on the beach")]
    with runtime.UNetCalls(toy_pipe.unet) as counted:
        trce.erase(toy_pipe, "nudity", config, stage2_prompts=prompts, progress=False)
    # 4 malicious trajectories in batches of 3 (3 + 1), 3 steps (k <= 2, and the next), and 3 unconditional ones,
    # 4 steps each; 8 training steps
    assert sorted(counted.calls) == _expected(runtime.trce(config, len(prompts)))
    if config.stage1:  # stage 1 alone: a closed form, no UNet call
        assert runtime.trce(dataclasses.replace(config, stage2=False), 2).unet_calls() == 0


def test_chapter11_work_counts_the_plans_models():
    plan = chapter11_plan("sd14")
    n = runtime.evaluation_images("sd14", plan.sizes)
    work = runtime.chapter11("sd14")

    def sampled(work):
        return sum(c.rows * c.calls for c in work.calls if c.phase == "evaluation: every model" and c.kind == "infer")
    # the default sd14 plan: TRCE (T), TRCE (T+V) on its 150 prompts (claim seed 0 = main), and the claim's [KEY]
    # edit on all but the 10 big_artists prompts; SD, ESD-u and UCE are chapter 10's images of the same prompts
    steps = get_profile("sd14").steps
    assert n == 150 and len(plan.methods) + 3 == 5 and chapter10_plan("sd14").sizes == plan.sizes
    assert sampled(work) == (2 * 150 + 140) * 2 * steps
    # without chapter 10's cache its models are sampled too
    assert sampled(runtime.chapter11("sd14", chapter10_cached=False)) == (5 * 150 + 140) * 2 * steps
    other_sizes = runtime.chapter11("sd14", sizes={**plan.sizes, "coco_3k": 30})  # not chapter 10's prompts
    assert sampled(other_sizes) == (5 * 140 + 130) * 2 * steps
    trained = {c.phase for c in work.calls if c.kind == "train"}
    assert trained == {"TRCE stage 2: training"}                  # ESD-u is chapter 10's cached edit
    assert "ESD-u (seed 0): training" in {c.phase for c in runtime.chapter11("sd14", chapter10_cached=False).calls}
    paper = runtime.chapter11("sd14", "sd14-paper")
    # three claim seeds of T+V and the ablation's stage 2 alone: four stage-2 runs
    assert sum(c.calls for c in paper.calls if c.kind == "train") == 4 * sum(
        c.calls for c in work.calls if c.kind == "train")
    with pytest.raises(ValueError, match="unknown sd14 sets"):
        runtime.evaluation_images("sd14", sets=["coco"])


def test_attack_work_is_the_calls_the_attacks_make(toy_pipe, unpadded):
    from erasure_lib.attacks import p4d, unlearndiffatk
    uda = unlearndiffatk.UnlearnDiffAtkConfig(iterations=2, n_timesteps=3, early_stop=False, steps=3)
    with runtime.UNetCalls(toy_pipe.unet) as counted:
        unlearndiffatk.attack(toy_pipe, "a nude person on a beach", target="nude", family="sensitive",
                              profile="toy", config=uda, seed=0)
    # the target image and 1 + 3 checks: 3 guided steps each; 2 x 3 training calls of one row
    assert sorted(counted.calls) == _expected(runtime.unlearndiffatk(uda, profile="toy"))
    config = p4d.P4DConfig(iterations=5, eval_every=2, n_target_images=2, target_batch=3, early_stop=False, steps=3)
    with runtime.UNetCalls(toy_pipe.unet) as counted:
        p4d.attack(toy_pipe, "a nude person on a beach", target="nude", family="sensitive", profile="toy",
                   config=config, seed=0)
    assert sorted(counted.calls) == _expected(runtime.p4d(config, profile="toy"))
