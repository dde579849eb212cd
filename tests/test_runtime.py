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


def test_detector_work_is_the_calls_the_detectors_make(toy_pipe, unpadded):
    """Chapter 30's detectors on a planted backdoor, through run_detectors as the chapter calls it: the counted work
    of each (fit and score) is its real UNet calls, row for row, with batches that do not divide the prompts."""
    from erasure_lib.backdoors import eviledit
    from erasure_lib.detect import benchmark
    from erasure_lib.detect.set import SETConfig
    from erasure_lib.detect.t2ishield import T2IShieldConfig
    from erasure_lib.detect.ufid import UFIDConfig
    bd = eviledit.plant(toy_pipe, config=eviledit.EvilEditConfig(seed=0))
    clean = ["a red tench on a grey background", "a white church at the beach", "a blue parachute in the sky",
             "a person wearing green", "a yellow camera on a striped background"]
    split = benchmark.DetectionSplit(clean[:5], clean[:2], bd.poison(clean[2:4]), bd.poison(clean[:2]))
    configs = {"SET": SETConfig.toy(n_steps=2, scales=(0.2, 7.0), batch_size=3, epochs=2),
               "T2IShield": T2IShieldConfig.toy(steps=3, batch_size=3),
               "UFID": UFIDConfig.toy(steps=2, n_variants=3, batch_size=4)}
    for name in ("SET", "FTT", "CDA", "UFID"):
        with runtime.UNetCalls(toy_pipe.unet) as counted:
            benchmark.run_detectors(toy_pipe, bd, split, [name], configs=configs, seed=0)
        work = runtime.detector(name, configs, n_train=5, n_test=2, n_cda=2)
        assert sorted(counted.calls) == _expected(work), name
    # SD v1.4's scheduler, PNDM with skip_prk_steps, repeats a timestep: one call more per run than its steps
    from diffusers import PNDMScheduler

    from erasure_lib.detect.t2ishield import token_maps
    own = toy_pipe.scheduler
    toy_pipe.scheduler = PNDMScheduler.from_config(own.config, skip_prk_steps=True)
    try:
        shield = T2IShieldConfig.toy(steps=3, batch_size=3)          # scheduler=None: the pipeline's
        with runtime.UNetCalls(toy_pipe.unet) as counted:
            token_maps(toy_pipe, clean[:4], shield, progress=False)
    finally:
        toy_pipe.scheduler = own
    expected = runtime.t2ishield_maps(shield, 4, scheduler="pndm")
    assert sorted(counted.calls) == _expected(expected) == sorted([(6, False)] * 4 + [(2, False)] * 4)
    with pytest.raises(ValueError, match="unknown detector"):
        runtime.detector("STRIP", configs, 5, 2)
    with pytest.raises(ValueError, match="CDA is supervised"):
        runtime.detector("CDA", configs, 5, 2, n_cda=0)


def test_chapter30_counts_the_plan():
    from erasure_lib.profiles import chapter30_plan
    sd14 = runtime.chapter30("sd14")
    plan = chapter30_plan("sd14")
    assert plan.n_check == 100 and plan.claim_seeds == (0,)
    # the check: 100 prompts x (clean + floor) and, per backdoor, 2 x 100 ASR images + 100 backdoored + the grid of 8;
    # 25 steps, CFG 7.5 (2 rows an image)
    check = sum(c.calls * c.rows for c in sd14.calls if c.phase.startswith("check") and c.kind == "infer")
    assert check == (2 * 100 + 2 * (3 * 100 + 8)) * 25 * 2
    # SET: 6 runs x 5 steps x 2 rows per prompt; curves (100 + 50) + fit (100) + score (50), per backdoor
    set_rows = sum(c.calls * c.rows for c in sd14.calls if c.phase.startswith("SET"))
    assert set_rows == 2 * (150 + 100 + 50) * 6 * 5 * 2
    # FTT: PNDM's 51 calls x 2 rows per prompt on 100 + 50 prompts; UFID: 4 images x 25 steps x 2 rows on 25 + 50
    assert sum(c.calls * c.rows for c in sd14.calls if c.phase.startswith("FTT")) == 2 * 150 * 51 * 2
    assert sum(c.calls * c.rows for c in sd14.calls if c.phase.startswith("UFID") and c.kind == "infer") == \
        2 * 75 * 4 * 25 * 2
    # a larger check costs more; the whole COCO pool is the old default's hours
    assert runtime.chapter30("sd14", n_check=2900).seconds("T4") > 4 * sd14.seconds("T4")
    assert 60 < sd14.seconds("T4") / 60 < 400 and sd14.seconds("A100") < sd14.seconds("T4")
    # the toy plan: four backdoors, three seeds, CDA and the ablation
    toy = runtime.chapter30("toy")
    assert any(c.phase.startswith("CDA") for c in toy.calls) and any("ablation" in c.phase for c in toy.calls)
    with pytest.raises(ValueError, match="VillanDiffusion"):
        runtime.chapter30("sd14", attacks=("villan",))


def test_inference_and_text_encoder_memory():
    from erasure_lib import memory
    one, eight = memory.inference_memory(2, decode_images=0), memory.inference_memory(16, decode_images=0)
    # SD v1.4's weights in fp16: (859.5M + 123.1M + 83.7M) x 2 bytes
    assert one["weights"] == 2 * (859_520_964 + 123_060_480 + 83_653_863)
    assert one["unet_call"] < eight["unet_call"] <= 8 * one["unet_call"]   # activations grow with the rows
    assert memory.inference_memory(16, decode_images=8)["decode"] > 0
    te = memory.text_encoder_training_memory(160)
    assert memory.text_encoder_training_memory(32)["activations"] < te["activations"]
    assert te["total"] == te["weights"] + te["student"] + te["step_peak"]
    with pytest.raises(ValueError):
        memory.inference_memory(0)


def test_chapter20_counts_the_plan():
    from erasure_lib.attacks.unlearndiffatk import UnlearnDiffAtkConfig
    sd14 = runtime.chapter20("sd14")
    # 4 nudity prompts x 3 erased models (ESD-u, UCE, Co-Erasing): 12 UnlearnDiffAtk runs of 40 iterations at each of
    # 50 timesteps, one training row each
    config = UnlearnDiffAtkConfig.sd14()
    assert (config.iterations, config.n_timesteps) == (40, 50)
    assert sd14.unet_rows("train") == 12 * 40 * 50
    # images (25 steps, CFG: 50 rows each): 4 models x 4 seed prompts before; 3 x 4 adversarial prompts after;
    # 2 released files x 50 prompts x 4 models; the grid's 6 pairs; each UnlearnDiffAtk run's target image and
    # 1 + 50 judged checks
    images = 16 + 12 + 400 + 12 + 12 * (1 + 51)
    assert sd14.unet_rows("infer") == images * 50
    # every prompt of both files: P4D's 151 and MMA's 1,000 on the 4 models
    assert runtime.chapter20("sd14", n_released=1000).unet_rows("infer") == (images - 400 + 4 * (151 + 1000)) * 50
    with pytest.raises(KeyError):
        runtime.chapter20("sd14", released=("coco",))


def test_trce_and_attack_memory():
    from erasure_lib import memory
    from erasure_lib.methods.trce import TRCEConfig
    unet = memory.meta_unet()
    attn1 = sum(p.numel() for n, p in unet.named_parameters() if ".attn1." in n)
    to_q = sum(p.numel() for n, p in unet.named_parameters() if ".attn2.to_q." in n)
    trce = memory.trce_memory()
    assert trce["trained_parameters"] == attn1 + to_q
    assert trce["trained"] == 12 * (attn1 + to_q)     # fp32 masters and AdamW's moments; the gradients: the step's
    # checkpointing (the sd14 config's) keeps less of the step than without it
    no_ckpt = memory.trce_memory(TRCEConfig.sd14(gradient_checkpointing=False))
    assert TRCEConfig.sd14().gradient_checkpointing and trce["step_peak"] < no_ckpt["step_peak"]
    one, four = memory.attack_memory(1), memory.attack_memory(4)
    assert one["weights"] < one["total"] and one["step_peak"] < four["step_peak"]
    # the prompt's gradient needs the activations of a forward: more than a no-grad call's peak
    assert one["step_peak"] > memory.inference_memory(1, decode_images=0)["unet_call"]


def test_text_encoder_step_against_a_measured_step():
    """The meta-device count of a text-encoder training step (activations, their gradients, the parameters'
    gradients) against the peak a real fp32 AdamW step allocates on the CPU (a small CLIP text encoder, second step:
    AdamW's moments already there), as the text-encoder backdoors train: the count is an upper bound within 30%."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from erasure_lib import memory
    config = {"vocab_size": 1000, "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
              "num_attention_heads": 4, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
              "projection_dim": 128}
    batch = 24
    estimate = memory.text_encoder_training_memory(batch, config=config)
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(**config)).float().train()
    n = sum(p.numel() for p in model.parameters())
    assert estimate["student"] == 16 * n               # weights, the starting copy, AdamW's two moments
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, target = torch.randint(0, 1000, (batch, 77)), torch.randn(batch, 77, 128)

    def step():
        torch.nn.functional.mse_loss(model(ids)[0], target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()
    measured = memory._profiled_peak(step)
    assert measured <= estimate["step_peak"] <= 1.3 * measured
