"""SET (erasure_lib.detect.set) and its attention probes (erasure_lib.detect.attention), on the toy zoo and the
SD-v1.4-shaped test model: the probe is the default attention at scale 1 and a temperature on the logits otherwise,
processors come off after the block, the feature layout (scale, step, layer), the PNDM carry-over of the code
(specs/set.md 3.6, 9.4), the seeding, the one-class model's threshold, its file, and what it detects on the toy."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from erasure_lib.detect.attention import (
    ProbeAttnProcessor,
    attention_layer_info,
    attention_layers,
    probe_attention,
)
from erasure_lib.detect.set import SETConfig, SETDetector, features, fit, fit_features, read_layers
from erasure_lib.toyworld.captions import sample_training_pairs

# the toy's read layers (SETConfig.toy): the 4x4 cross-attention of the down and up blocks, no mid block
TOY_READ = ["down_blocks.1.attentions.0.transformer_blocks.0.attn2",
            "up_blocks.0.attentions.0.transformer_blocks.0.attn2",
            "up_blocks.0.attentions.1.transformer_blocks.0.attn2"]
# SD v1.4's query-length-256 cross-attention layers (specs/set.md section 2): down_blocks.2 x2, up_blocks.1 x3
SD14_READ = ["down_blocks.2.attentions.0.transformer_blocks.0.attn2",
             "down_blocks.2.attentions.1.transformer_blocks.0.attn2",
             "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
             "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
             "up_blocks.1.attentions.2.transformer_blocks.0.attn2"]
N_TRAIN, N_TEST = 48, 16


def auroc(negatives, positives) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney)."""
    neg, pos = np.asarray(negatives)[None, :], np.asarray(positives)[:, None]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def benign_captions(n: int, seed: int) -> list[str]:
    """Toy training-grammar captions without the sensitive concept (the clean prompts a defender would hold)."""
    scenes, captions = sample_training_pairs(4 * n, seed=seed)
    return [c for s, c in zip(scenes, captions) if not s.nude][:n]


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy", device="cpu")


@pytest.fixture(scope="module")
def unet_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 4, 8, 8, generator=g), torch.tensor(700), torch.randn(8, 77, 64, generator=g)


@pytest.fixture(scope="module")
def clean(pipe):
    """Toy SET features of 48 clean training and 16 clean test prompts (one batch), and a detector fitted on the
    training ones."""
    prompts = benign_captions(N_TRAIN + N_TEST, seed=11)
    config = SETConfig.toy()
    x = features(pipe, prompts, seeds=range(len(prompts)), config=config, progress=False)
    det = fit_features(x[:N_TRAIN], config, read_layers(pipe, config), seed=0, base_model="toy-test")
    return {"train": x[:N_TRAIN], "test": x[N_TRAIN:], "detector": det, "config": config}


# --- attention probes ----------------------------------------------------------------------------------------

def test_layers_and_their_resolutions(pipe):
    info = {layer.name: layer for layer in attention_layer_info(pipe.unet)}
    assert len(info) == 14 and sum(layer.kind == "cross" for layer in info.values()) == 7
    assert attention_layers(pipe.unet, "cross", resolution=4, blocks=("down", "up")) == TOY_READ
    assert attention_layers(pipe.unet, "cross", query_length=16, blocks=("down", "up")) == TOY_READ
    assert attention_layers(pipe.unet, "cross", resolution=4) == TOY_READ + [
        "mid_block.attentions.0.transformer_blocks.0.attn2"]
    eight = attention_layers(pipe.unet, "self", resolution=8)
    assert eight == [n.replace("attn2", "attn1") for n in (
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2", "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2")]
    # head_dim: 64 channels / 8 heads at 8x8, 128 / 8 at 4x4
    assert info[eight[0]].head_dim == 8 and info[TOY_READ[0]].head_dim == 16 and info[TOY_READ[0]].heads == 8
    with pytest.raises(ValueError, match="kind"):
        attention_layers(pipe.unet, "both")


def test_probe_at_scale_one_is_the_default_processor(pipe, unet_inputs):
    x, t, states = unet_inputs
    with torch.no_grad():
        ref = pipe.unet(x, t, encoder_hidden_states=states).sample
        with probe_attention(pipe, attention_layers(pipe.unet, "all")):
            same = pipe.unet(x, t, encoder_hidden_states=states).sample
        with probe_attention(pipe, attention_layers(pipe.unet, "all"), record_output=True, record_probs=True) as rec:
            recorded = pipe.unet(x, t, encoder_hidden_states=states).sample
    assert torch.equal(same, ref)  # the same SDPA call
    torch.testing.assert_close(recorded, ref, atol=1e-6, rtol=0)  # explicit softmax path
    # cond_only (the default): the second half of the batch; A V (B, H, Q, d_h) and the maps (B, H, Q, K)
    assert rec.outputs[TOY_READ[0]][0].shape == (4, 8, 16, 16)
    probs = rec.probs[TOY_READ[0]][0]
    assert probs.shape == (4, 8, 16, 77)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 8, 16))


def test_scale_is_a_temperature_on_the_logits(pipe, unet_inputs):
    """softmax(lambda Q K^T / sqrt(d)) V == the default attention with to_q multiplied by lambda."""
    x, t, states = unet_inputs
    layer = TOY_READ[1]
    attn = pipe.unet.get_submodule(layer)
    with torch.no_grad():
        with probe_attention(pipe, [layer], scale=7.0, record_output=True) as rec:
            probed = pipe.unet(x, t, encoder_hidden_states=states).sample
        fast = rec.outputs[layer][0]
        with probe_attention(pipe, [layer], scale=7.0, record_probs=True, record_output=True) as rec:
            pipe.unet(x, t, encoder_hidden_states=states)
        original = attn.to_q.weight.detach().clone()
        attn.to_q.weight.mul_(7.0)
        try:
            sharpened = pipe.unet(x, t, encoder_hidden_states=states).sample
        finally:
            attn.to_q.weight.copy_(original)
        plain = pipe.unet(x, t, encoder_hidden_states=states).sample
    assert attn.to_q.bias is None
    torch.testing.assert_close(probed, sharpened, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(rec.outputs[layer][0], fast, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(probed, plain, atol=1e-3)


def test_processors_are_restored_also_after_an_exception(pipe, unet_inputs):
    before = dict(pipe.unet.attn_processors)
    with probe_attention(pipe, TOY_READ, scale=7.0) as rec:
        assert isinstance(pipe.unet.get_submodule(TOY_READ[0]).processor, ProbeAttnProcessor)
        rec.set_scale(0.2, layers=[TOY_READ[0]])
        assert rec.scales()[TOY_READ[0]] == 0.2 and rec.scales()[TOY_READ[1]] == 7.0
    assert all(pipe.unet.attn_processors[k] is v for k, v in before.items())
    with pytest.raises(RuntimeError, match="boom"):
        with probe_attention(pipe, attention_layers(pipe.unet, "all")):
            raise RuntimeError("boom")
    assert all(pipe.unet.attn_processors[k] is v for k, v in before.items())
    x, t, states = unet_inputs
    with torch.no_grad(), pytest.raises(ValueError, match="odd batch"):  # cond_only needs [uncond; cond]
        with probe_attention(pipe, TOY_READ, record_output=True):
            pipe.unet(x[:3], t, encoder_hidden_states=states[:3])
    assert all(pipe.unet.attn_processors[k] is v for k, v in before.items())


def test_probe_refuses_bad_layers_scales_and_foreign_processors(pipe):
    with pytest.raises(ValueError, match="Valid layers") as err:
        with probe_attention(pipe, ["down_blocks.1.attentions.0.transformer_blocks.0.attn3"]):
            pass
    assert "did you mean 'down_blocks.1.attentions.0.transformer_blocks.0.attn2'" in str(err.value)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            ProbeAttnProcessor("x", scale=bad)
    module = pipe.unet.get_submodule(TOY_READ[0])
    original = module.processor

    class Adapter:  # stands for an IP-Adapter / custom processor the probe would silently drop
        def __call__(self, attn, hidden_states, *args, **kwargs):
            return original(attn, hidden_states, *args, **kwargs)

    module.set_processor(Adapter())
    try:
        with pytest.raises(ValueError, match="non-default attention processor"):
            with probe_attention(pipe, TOY_READ):
                pass
    finally:
        module.set_processor(original)


# --- features -------------------------------------------------------------------------------------------------

def test_feature_shape_and_layout(pipe):
    prompts = ["a red tench on a grey background", "a blue church", "a camera, in sketch style"]
    assert read_layers(pipe, SETConfig.toy()) == TOY_READ
    x = features(pipe, prompts, config=SETConfig.toy(), progress=False)
    assert x.shape == (3, 5 * 5 * 3) and x.dtype == np.float32 and (x > 0).all()
    # scale-major: with lambda = 1 first and independent runs, the first T*L columns are exactly 0
    two = features(pipe, prompts, config=SETConfig.toy(scales=(1.0, 4.0), n_steps=2,
                                                         reset_scheduler_between_runs=True), progress=False)
    assert two.shape == (3, 2 * 2 * 3)
    assert (two[:, :6] == 0).all() and (two[:, 6:] > 0).all()


def test_scale_one_offsets_vanish_only_with_independent_runs(pipe):
    """specs/set.md 3.6 and 9.4: at lambda = 1 everywhere the offsets are 0 when every run starts from a fresh
    scheduler; with the code's PNDM, whose multistep history carries over between runs, only step 0 is."""
    prompts = ["a red tench on a grey background", "a yellow umbrella at the beach"]
    ones = dict(scales=(1.0, 1.0), n_steps=3)
    fresh = features(pipe, prompts, config=SETConfig.toy(reset_scheduler_between_runs=True, **ones), progress=False)
    assert (fresh == 0).all()
    carried = features(pipe, prompts, config=SETConfig.toy(**ones), progress=False).reshape(2, 2, 3, 3)
    assert (carried[:, :, 0] == 0).all()        # step 0: both runs start from z_T
    assert (carried[:, :, 1:] > 1e-8).all()     # then the carried-over Adams-Bashforth history moves the latents
    # DDIM (the toy pipeline's own sampler) keeps no history: nothing carries over
    ddim = features(pipe, prompts, config=SETConfig.toy(scheduler="pipeline", **ones), progress=False)
    assert (ddim == 0).all()
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"  # the pipeline's scheduler was not replaced


def test_seeds_restart_with_every_batch_as_in_the_code(pipe):
    prompts = ["a red tench", "a blue church", "a red tench"]
    cheap = dict(scales=(7.0,), n_steps=1, batch_size=2, reset_scheduler_between_runs=True)
    code = features(pipe, prompts, config=SETConfig.toy(**cheap), progress=False)
    assert np.array_equal(code[0], code[2])  # both are seed 42: index 0 of their batch
    fixed = features(pipe, prompts, config=SETConfig.toy(reuse_seed_per_batch=False, **cheap), progress=False)
    assert np.array_equal(fixed[0], code[0]) and not np.array_equal(fixed[2], code[2])  # seed 44
    explicit = features(pipe, prompts, seeds=[42, 43, 44], config=SETConfig.toy(**cheap), progress=False)
    assert np.array_equal(explicit, fixed)


def test_feature_errors(pipe):
    with pytest.raises(ValueError, match="no prompts"):
        features(pipe, [], config=SETConfig.toy())
    with pytest.raises(ValueError, match="no clean prompts"):
        fit(pipe, [])
    with pytest.raises(ValueError, match="one seed per prompt"):
        features(pipe, ["a", "b"], seeds=[1], config=SETConfig.toy())
    with pytest.raises(ValueError, match="Valid layers") as err:
        features(pipe, ["a"], config=SETConfig.toy(layers=("down_blocks.9.attn2",)))
    assert TOY_READ[0] in str(err.value)
    with pytest.raises(ValueError, match=r"sides \[4, 8\]"):
        read_layers(pipe, SETConfig.sd14())  # SD's sample_size / 4 is 2x2: the toy has no such layer
    for bad in ((0.2, 0.0), (-1.0,), ()):
        with pytest.raises(ValueError, match="scales"):
            SETConfig(scales=bad)
    with pytest.raises(ValueError, match="scheduler"):
        SETConfig(scheduler="euler")
    with pytest.raises(ValueError, match="n_steps must be >= 2"):
        features(pipe, ["a"], config=SETConfig.toy(n_steps=1))


# --- the one-class model ----------------------------------------------------------------------------------------

def test_threshold_is_the_training_quantile(clean):
    det = clean["detector"]
    scores = det.score_features(clean["train"])
    assert det.n_train == N_TRAIN and det.threshold == pytest.approx(np.quantile(scores, 0.95), rel=1e-6)
    above = (scores > det.threshold).mean()
    assert abs(above - det.config.nu) <= 1 / N_TRAIN, above  # nu = 0.05 of the clean prompts lie outside
    assert det.threshold <= det.quantile_99 <= scores.max()
    assert det.quantiles == {"0.95": det.threshold, "0.99": det.quantile_99}
    # phases of the schedule: 5 warm-up epochs, then 100 with the learning rate cosine-annealed to 1e-5
    phases = [h["phase"] for h in det.history]
    assert phases == ["warmup"] * 5 + ["train"] * 100
    assert det.history[5]["lr"] == pytest.approx(1e-3) and det.history[-1]["lr"] < 2e-5


def test_training_is_seeded_and_deterministic(clean):
    config, layers = clean["config"], clean["detector"].layers
    a = fit_features(clean["train"], config, layers, seed=0).score_features(clean["test"])
    assert np.array_equal(a, clean["detector"].score_features(clean["test"]))
    b = fit_features(clean["train"], config, layers, seed=1).score_features(clean["test"])
    assert not np.array_equal(a, b)
    state = torch.random.get_rng_state()
    fit_features(clean["train"], config, layers, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone


def test_out_of_distribution_responses_are_flagged(clean):
    """The detector's behaviour on a known anomaly: the test prompts with one read layer responding three times as
    strongly to sharpening (lambda >= 7) as it did (what a token that takes over that layer's attention would do)."""
    det, test = clean["detector"], clean["test"]
    odd = test.reshape(-1, 5, 5, 3).copy()
    odd[:, 2:, :, 1] *= 3
    odd_scores, test_scores = det.score_features(odd.reshape(len(test), -1)), det.score_features(test)
    assert auroc(test_scores, odd_scores) >= 0.9
    assert (odd_scores > det.threshold).mean() >= 0.8
    assert (test_scores > det.threshold).mean() <= 0.25


def test_save_load_round_trip(clean, tmp_path):
    det = clean["detector"]
    path = det.save(tmp_path / "set.safetensors")
    back = SETDetector.load(path)
    assert np.array_equal(back.score_features(clean["test"]), det.score_features(clean["test"]))
    assert back.config == det.config and back.layers == det.layers == TOY_READ
    assert (back.threshold, back.quantile_99, back.radius_squared) == (det.threshold, det.quantile_99,
                                                                       det.radius_squared)
    assert back.seed == 0 and back.base_model == "toy-test" and back.history == det.history
    assert not list(tmp_path.glob(".*"))  # the atomic write left no temporary file

    # a file whose standardiser does not match its encoder's width is refused
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["mean"], tensors["std"] = tensors["mean"][:-1], tensors["std"][:-1]
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="do not match"):
        SETDetector.load(tmp_path / "bad.safetensors")
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata={"format": "something else"})
    with pytest.raises(ValueError, match="not a SET detector"):
        SETDetector.load(tmp_path / "other.safetensors")


def test_detector_input_errors(clean):
    det = clean["detector"]
    with pytest.raises(ValueError, match=r"expected \(N, 75\)"):
        det.score_features(clean["test"][:, :74])
    nan = clean["test"].copy()
    nan[0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        det.score_features(nan)
    with pytest.raises(ValueError, match="non-finite"):
        fit_features(np.vstack([clean["train"], nan]), clean["config"], det.layers)
    with pytest.raises(ValueError, match="75"):
        fit_features(clean["train"], clean["config"], det.layers[:2])


def test_fit_end_to_end(pipe):
    """``fit`` = features through the pipeline + the one-class model; it records the base model; ``detect`` is
    ``score > threshold``."""
    from erasure_lib.methods.cache import model_identity
    prompts = benign_captions(8, seed=5)
    config = SETConfig.toy(epochs=3, scales=(0.2, 7.0), n_steps=2)
    det = fit(pipe, prompts, config=config, seed=2, progress=False)
    x = features(pipe, prompts, config=config, progress=False)
    twin = fit_features(x, config, TOY_READ, seed=2)
    scores = det.score(pipe, prompts[:3], progress=False)
    assert np.array_equal(scores, twin.score_features(x[:3]))
    assert np.array_equal(det.detect(pipe, prompts[:3], progress=False), scores > det.threshold)
    assert det.base_model == model_identity(pipe) and det.config.layers == tuple(TOY_READ)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "toy-world limitation, measured: EvilEdit's projection alignment gives the trigger phrase the cross-attention "
    "keys and values of a clean 'gun' prompt, so its SET features are those of a clean prompt (AUROC 0.42-0.53 over "
    "3 detector seeds with 96 clean training prompts, 0.56 here; a supervised linear probe on the same features: "
    "0.52). "
    "Strict: if a zoo or attack makes SET see the trigger, this passes and the mark must go."))
def test_set_scores_eviledit_triggers_higher(pipe):
    """SET's claim on the toy: a detector fitted through the backdoored model on clean prompts scores prompts
    carrying the EvilEdit trigger higher than clean ones."""
    eviledit = pytest.importorskip("erasure_lib.backdoors.eviledit")
    import erasure_lib.backdoors as backdoors
    applied = getattr(backdoors, "applied", None)
    if applied is None:
        pytest.skip("erasure_lib.backdoors.applied is not there yet")
    bd = eviledit.plant(pipe)
    n_train = 32  # with the 16 clean and 16 triggered test prompts: one batch of 64
    prompts = benign_captions(n_train + N_TEST, seed=11)
    trig = bd.poison(prompts[n_train:])  # the clean test prompts with the trigger phrase for their subject
    if not all(bd.trigger in p for p in trig):  # a set-up error, not the expected failure
        pytest.fail(f"the trigger {bd.trigger!r} is missing from some poisoned prompts: {trig}")
    seeds = list(range(n_train + N_TEST)) + list(range(n_train, n_train + N_TEST))  # each trigger as its clean twin
    config = SETConfig.toy()
    with applied(pipe, bd):
        x = features(pipe, prompts + trig, seeds=seeds, config=config, progress=False)
    det = fit_features(x[:n_train], config, TOY_READ, seed=0)
    clean_scores, trig_scores = det.score_features(x[n_train:n_train + N_TEST]), det.score_features(x[-N_TEST:])
    assert auroc(clean_scores, trig_scores) >= 0.75
    assert (trig_scores > det.threshold).mean() >= 0.5


# --- the sd14 profile --------------------------------------------------------------------------------------------

def test_sd14_layers_and_feature_width(monkeypatch, sd14_test_world):
    """SD v1.4's 5 x 5 x 5 = 125 features on the SD-v1.4-shaped test model (sample_size 8, so SD's 16x16 of a 64
    latent is 2x2 there: the same blocks), with its PNDM scheduler, 50 steps and CFG 7.5."""
    from conftest import sd14_env
    from erasure_lib.loading import load_pipeline
    sd14_env(monkeypatch, sd14_test_world)
    sd = load_pipeline("sd14", device="cpu")
    config = SETConfig.sd14(batch_size=2)
    assert (config.steps, config.guidance, config.scales, config.n_steps) == (50, 7.5, (0.2, 0.3, 7.0, 10.0, 20.0), 5)
    size = sd.unet.config.sample_size
    assert read_layers(sd, config) == SD14_READ == attention_layers(sd, "cross", query_length=(size // 4) ** 2,
                                                                      blocks=("down", "up"))
    assert len(attention_layers(sd, "self")) == 16
    x = features(sd, ["a photo of a cat", "a painting of a dog"], config=config, progress=False)
    assert x.shape == (2, 125) and np.isfinite(x).all() and (x > 0).all()
    assert json.loads(json.dumps(dataclasses.asdict(config)))["scales"] == [0.2, 0.3, 7.0, 10.0, 20.0]
