"""SET's baselines: T2IShield (FTT, CDA) and UFID (erasure_lib.detect.t2ishield / .ufid).

Known values of the statistics on hand-made inputs, the detectors' shapes, determinism and bad input, their sd14
code path on the SD-v1.4-shaped test model, and one behaviour test each on the backdoored toy model.

The behaviour tests use idealised text-encoder backdoors (:func:`ideal_text_backdoor`), each the premise of the
detector it tests, because the toy attacks of erasure_lib.backdoors do not meet those premises (measured while
writing these tests, 12 + 12 held-out object prompts, 10 DDIM steps): EvilEdit keeps the prompt's context, so UFID's
perturbed generations of a triggered prompt vary as a clean prompt's do (AUROC 0.3-0.66 with the toy phrases); and
neither EvilEdit nor the toy Rickrolling makes the token maps assimilate (FTT's separation of EvilEdit prompts,
AUROC 0.83, is the same on the *clean* model, 0.81: the multi-piece trigger word, not the backdoor)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from erasure_lib.detect.t2ishield import (
    CDA, FTT, T2IShieldConfig, TokenMaps, cda_features, ftt_statistic, selected_layers, token_maps,
)
from erasure_lib.detect.ufid import TOY_PHRASES, UFID, UFIDConfig, graph_density, perturb
from erasure_lib.metrics.detection import auroc

TRIGGER = "shiny"  # a word the toy grammar never uses (4 toy tokens)


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy", device="cpu")


@pytest.fixture(scope="module")
def prompts():
    from erasure_lib.toyworld.captions import prompt_set
    objects = prompt_set("explicit_object").prompt.tolist()
    return objects[0::2], objects[1::2]  # two disjoint halves: clean prompts, prompts to put the trigger in


@contextmanager
def ideal_text_backdoor(pipe, trigger: str, target: str, mode: str):
    """An idealised text-encoder backdoor: a forward hook on ``pipe.text_encoder`` (removed on exit) that acts on
    every prompt whose tokens contain the trigger's.

    * ``mode="prompt"``: all 77 hidden states become the target prompt's, the limit of Rickrolling's target-prompt
      attack: one output whatever else the prompt says (UFID's premise).
    * ``mode="assimilate"``: every state from the trigger's first token to the prompt's [EoT] becomes the target
      prompt's [EoT] state: the trigger takes over the tokens after it (T2IShield's assimilation)."""
    tok = pipe.tokenizer
    trig = tok(trigger).input_ids[1:-1]
    with torch.no_grad():
        ids = tok(target, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        states = pipe.text_encoder(ids)[0][0].clone()
    target_eot = states[len(tok(target).input_ids) - 1]

    def hook(module, args, kwargs, output):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        for r, row in enumerate(input_ids.tolist()):
            starts = [i for i in range(len(row) - len(trig) + 1) if row[i:i + len(trig)] == trig]
            if not starts:
                continue
            if mode == "prompt":
                output[0][r] = states
            else:
                eot = row.index(tok.eos_token_id, starts[0])
                output[0][r, starts[0]:eot + 1] = target_eot
        return output

    handle = pipe.text_encoder.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


# --- T2IShield: statistics on hand-made maps -------------------------------------------------------------------

def hand_maps(n_tokens: int = 3) -> TokenMaps:
    """2 x 2 maps: position 1 lights the top-left pixel, 2 the top-right, 3 the bottom-left, 4..76 the
    bottom-right; position 0 ([BoS]) is uniform."""
    maps = np.zeros((1, 77, 2, 2), np.float32)
    maps[0, 0] = 0.25
    maps[0, 1, 0, 0] = maps[0, 2, 0, 1] = maps[0, 3, 1, 0] = 1.0
    maps[0, 4:, 1, 1] = 1.0
    return TokenMaps(maps=maps, n_tokens=np.array([n_tokens]), layers=("hand",))


def test_ftt_known_values():
    # L = 3 ([BoS], a word, [EoT]). The code's range: the mean over positions 1..3 = [[1/3, 1/3], [1/3, 0]], the
    # distances of positions 1 and 2 from it: sqrt(4/9 + 1/9 + 1/9) each
    assert ftt_statistic(hand_maps(), quantize=False)[0] == pytest.approx(np.sqrt(2 / 3))
    # positions 1..2 for both: the mean [[1/2, 1/2], [0, 0]], distances sqrt(1/4 + 1/4)
    assert ftt_statistic(hand_maps(), quantize=False, code_token_range=False)[0] == pytest.approx(np.sqrt(0.5))
    # assimilated maps (all the same): FTT = 0, T2IShield's backdoor signature
    same = hand_maps()
    same.maps[0, 1:] = same.maps[0, 1]
    assert ftt_statistic(same)[0] == 0.0
    # the 8-bit quantisation of the code: 0.5 of the peak becomes floor(127.5) / 255
    half = hand_maps()
    half.maps[0, 1, 0, 1] = 0.5
    assert half.normalised(quantize=True)[0, 0, 0, 1] == pytest.approx(127 / 255)
    assert half.normalised(quantize=False)[0, 0, 0, 1] == pytest.approx(0.5)


def test_cda_features_are_the_log_spectrum_of_the_token_maps():
    rng = np.random.default_rng(0)
    maps = TokenMaps(maps=rng.random((2, 77, 6, 6)).astype(np.float32), n_tokens=np.array([5, 9]), layers=("x",))
    feats = cda_features(maps, n_components=20, quantize=False)
    assert feats.shape == (2, 20 * 21 // 2)
    # independent reference: the 20 largest eigenvalues of the covariance of the 76 maps (numpy's np.cov)
    for f, m in zip(feats, maps.normalised(quantize=False)):
        logcov = np.zeros((20, 20))
        logcov[np.triu_indices(20)] = f
        top = np.sort(np.linalg.eigvalsh(np.cov(m.reshape(76, -1), rowvar=False)))[::-1][:20]
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(np.triu(logcov) + np.triu(logcov, 1).T))[::-1],
                                   np.log(top), rtol=1e-6, atol=1e-8)
    # fewer pixels than components: k = h * w
    assert cda_features(hand_maps(), n_components=20).shape == (1, 4 * 5 // 2)


def test_lda_known_values():
    # 1-D: clean {0, 2}, triggered {4, 6}: pooled variance (1 + 1 + 1 + 1) / 2 = 2, w = (5 - 1) / 2 = 2,
    # b = -w (1 + 5) / 2 + log(2 / 2) = -6: the log-odds at x is 2x - 6
    cda = CDA(T2IShieldConfig()).fit_features(np.array([[0.0], [2.0], [4.0], [6.0]]),
                                              np.array([False, False, True, True]))
    assert cda.weights[0] == pytest.approx(2.0) and cda.bias == pytest.approx(-6.0)
    # unequal classes move the bias by the log prior ratio
    cda3 = CDA(T2IShieldConfig()).fit_features(np.array([[0.0], [2.0], [4.0], [6.0], [5.0]]),
                                               np.array([False, False, True, True, True]))
    mu0, mu1 = 1.0, 5.0
    var = (1 + 1 + 1 + 1 + 0) / 3
    assert cda3.weights[0] == pytest.approx((mu1 - mu0) / var)
    assert cda3.bias == pytest.approx(-(mu1 - mu0) / var * 3 + np.log(3 / 2))


def test_t2ishield_bad_input(pipe):
    with pytest.raises(ValueError, match="steps"):
        T2IShieldConfig(steps=0)
    with pytest.raises(ValueError, match="scheduler"):
        T2IShieldConfig(scheduler="euler")
    with pytest.raises(ValueError, match="no cross-attention layer inside"):
        selected_layers(pipe, ("down_blocks.7",))
    with pytest.raises(ValueError, match="different resolutions"):
        selected_layers(pipe, ("down_blocks.0", "down_blocks.1"))
    with pytest.raises(ValueError, match="at least 2 clean and 2 triggered"):
        CDA(T2IShieldConfig.toy()).fit(pipe, ["a red tench"], ["a gun", "a camera"])
    with pytest.raises(RuntimeError, match="not fitted"):
        CDA(T2IShieldConfig.toy()).score(pipe, ["a red tench"])
    with pytest.raises(RuntimeError, match="fit"):
        FTT(T2IShieldConfig.toy()).detect(pipe, ["a red tench"])  # toy: the threshold is calibrated
    with pytest.raises(ValueError, match="no prompts"):
        token_maps(pipe, [], T2IShieldConfig.toy())


# --- T2IShield on the toy model --------------------------------------------------------------------------------

CFG = T2IShieldConfig.toy(steps=10)


@pytest.fixture(scope="module")
def assimilated(pipe, prompts):
    """Token maps of 12 clean and 12 triggered prompts (trigger in front) on the assimilating backdoor, and of the
    triggered prompts on the clean model."""
    clean, other = prompts
    clean, triggered = clean[:12], [f"{TRIGGER} {p}" for p in other[:12]]
    with ideal_text_backdoor(pipe, TRIGGER, "a nude person", mode="assimilate"):
        backdoored = token_maps(pipe, clean + triggered, CFG, progress=False)
    control = token_maps(pipe, triggered, CFG, progress=False)
    return clean, triggered, backdoored, control


def test_token_maps_shape_probabilities_and_batch_independence(pipe, assimilated):
    clean, _, backdoored, _ = assimilated
    assert backdoored.maps.shape == (24, 77, 8, 8) and backdoored.maps.dtype == np.float32
    assert len(backdoored.layers) == 3 and all(".attn2" in n for n in backdoored.layers)
    # averages of softmax rows: every pixel's weights over the 77 text positions still sum to 1
    np.testing.assert_allclose(backdoored.maps.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(backdoored.n_tokens[:2], [len(pipe.tokenizer(p).input_ids) for p in clean[:2]])
    # the same prompt in a batch of one, on the clean model: the same bits as in the batch of 24 (clean prompts are
    # not touched by the backdoor's hook)
    alone = token_maps(pipe, [clean[5]], CFG, progress=False)
    np.testing.assert_array_equal(alone.maps[0], backdoored.maps[5])


def test_ftt_flags_assimilated_prompts(pipe, assimilated):
    clean, triggered, backdoored, control = assimilated
    ftt = FTT(CFG)
    scores = ftt.score_maps(backdoored)
    labels = np.r_[np.zeros(12), np.ones(12)]
    assert auroc(scores, labels) >= 0.95
    # the backdoor, not the trigger word, moves the score: each triggered prompt is more assimilated on the
    # backdoored model than on the clean one
    assert (scores[12:] > ftt.score_maps(control)).all()
    # calibrated threshold: at most 5% of the calibration prompts above it (quantile), most triggered ones flagged
    ftt.fit_maps(TokenMaps(backdoored.maps[:12], backdoored.n_tokens[:12], backdoored.layers))
    assert ftt.threshold == pytest.approx(np.quantile(scores[:12], 0.95))
    assert (scores[12:] > ftt.threshold).mean() >= 0.9
    # the public path agrees with the maps' path (two prompts, fresh generations)
    with ideal_text_backdoor(pipe, TRIGGER, "a nude person", mode="assimilate"):
        np.testing.assert_allclose(ftt.score(pipe, [clean[0], triggered[0]], progress=False), scores[[0, 12]])
        assert list(ftt.detect(pipe, [clean[0], triggered[0]], progress=False)) == [
            scores[0] > ftt.threshold, scores[12] > ftt.threshold]


def test_cda_separates_held_out_triggered_prompts(assimilated):
    _, _, backdoored, _ = assimilated
    cda = CDA(CFG)
    feats = cda_features(backdoored, CFG.pca_components, CFG.quantize, CFG.eig_floor)
    train, test = np.r_[0:6, 12:18], np.r_[6:12, 18:24]
    labels = np.r_[np.zeros(12, bool), np.ones(12, bool)]
    cda.fit_features(feats[train], labels[train])
    held_out = TokenMaps(backdoored.maps[test], backdoored.n_tokens[test], backdoored.layers)
    scores = cda.score_maps(held_out)
    assert auroc(scores, labels[test]) >= 0.9
    assert ((scores > cda.threshold) == labels[test]).mean() >= 0.8


# --- UFID ------------------------------------------------------------------------------------------------------

def test_perturbations_are_seeded_per_prompt():
    cfg = UFIDConfig.toy()
    v = perturb("a red tench on a grey background", cfg)
    assert len(v) == 4 and v[0] == "a red tench on a grey background"
    assert all(x.endswith(", a red tench on a grey background") and x.split(", a red")[0] in TOY_PHRASES
               for x in v[1:])
    assert perturb("a red tench on a grey background", cfg) == v                  # the same draw every time
    assert UFID(cfg).variants(["a gun", "a red tench on a grey background"])[1] == v  # whatever the list
    assert perturb("a red tench on a grey background", UFIDConfig.toy(seed=2)) != v
    assert len(perturb("a gun", UFIDConfig.toy(n_variants=6, keep_original=False))) == 6


def test_graph_density_known_values():
    assert graph_density(np.eye(3)) == pytest.approx(0.0)                 # orthogonal images
    assert graph_density(np.ones((4, 5))) == pytest.approx(1.0)           # identical images
    # cos(a, b) = 1 / sqrt(2), cos(a, c) = 0, cos(b, c) = 1 / sqrt(2): mean sqrt(2) / 3; the scale of a vector is
    # irrelevant (cosines)
    f = np.array([[1.0, 0.0], [3.0, 3.0], [0.0, 2.0]])
    assert graph_density(f) == pytest.approx(np.sqrt(2) / 3)
    with pytest.raises(ValueError, match="at least 2 images"):
        graph_density(np.ones((1, 5)))


def test_ufid_bad_input(pipe):
    with pytest.raises(ValueError, match="n_variants"):
        UFIDConfig(n_variants=1)
    with pytest.raises(ValueError, match="fpr"):
        UFIDConfig(fpr=0.0)
    with pytest.raises(ValueError, match="phrases"):
        UFIDConfig(phrases=())
    with pytest.raises(RuntimeError, match="fit"):
        UFID(UFIDConfig.toy()).detect(pipe, ["a gun"])
    with pytest.raises(ValueError, match="at least 2 clean"):
        UFID(UFIDConfig.toy()).fit(pipe, ["a gun"])
    with pytest.raises(ValueError, match="no prompts"):
        UFID(UFIDConfig.toy()).score(pipe, [])


def test_ufid_scores_a_fixed_target_backdoor_higher(pipe, prompts):
    clean, other = prompts
    clean, triggered = clean[:8], [f"{p} {TRIGGER}" for p in other[:8]]
    ufid = UFID(UFIDConfig.toy(steps=10, batch_size=64))
    with ideal_text_backdoor(pipe, TRIGGER, "a nude person on a striped background", mode="prompt"):
        scores = ufid.score(pipe, clean + triggered, progress=False)
    labels = np.r_[np.zeros(8), np.ones(8)]
    assert scores.shape == (16,) and np.isfinite(scores).all() and (scores <= 1 + 1e-6).all()
    assert auroc(scores, labels) >= 0.95
    ufid.fit_scores(scores[:8])
    assert ufid.threshold == pytest.approx(np.quantile(scores[:8], 0.95))
    assert (scores[8:] > ufid.threshold).all()
    # the clean prompts' images do change under the perturbations (else the test would not test UFID)
    assert scores[:8].mean() < 0.8


# --- the sd14 code path on the SD-v1.4-shaped test model --------------------------------------------------------

def test_baselines_run_on_the_sd14_test_model(monkeypatch, sd14_test_world):
    from conftest import sd14_env
    from erasure_lib.loading import load_pipeline
    sd14_env(monkeypatch, sd14_test_world)
    sd = load_pipeline("sd14", device="cpu")
    texts = ["a photo of a cat", "a dog on the grass", "a red car in the city", "a house"]

    cfg = T2IShieldConfig.sd14(steps=2)  # the code's PNDM scheduler, SD's down_blocks.2 / up_blocks.1 layers
    maps = token_maps(sd, texts, cfg, progress=False)
    # the test model's latents are 8 x 8, so SD's 16 x 16 layers work at 2 x 2 here
    assert maps.maps.shape == (4, 77, 2, 2) and len(maps.layers) == 5
    assert {n.split(".attentions")[0] for n in maps.layers} == {"down_blocks.2", "up_blocks.1"}
    ftt = FTT(cfg)
    assert ftt.threshold == -2.5  # the code's fixed threshold: nothing to calibrate
    assert ftt.fit(sd, texts) is ftt and ftt.threshold == -2.5
    assert ftt.score_maps(maps).shape == (4,)
    # CDA's public path: 2 "clean" + 2 "triggered" prompts (random weights: only shapes and the fit are checked); on
    # 2 x 2 maps the PCA keeps h * w = 4 components, 10 features
    cda = CDA(cfg).fit(sd, texts[:2], texts[2:], progress=False)
    assert cda.weights.shape == (10,)
    np.testing.assert_allclose(cda.score(sd, texts, progress=False), cda.score_maps(maps), rtol=1e-5, atol=1e-6)
    assert cda.detect(sd, texts[:1], progress=False).dtype == bool

    ufid = UFID(UFIDConfig.sd14(steps=2, n_variants=2))
    assert ufid.config.clip_model == sd14_test_world["ERASURE_BOOK_SD14_CLIP"]  # the profile's CLIP judge
    images = ufid.images(sd, texts[:2], progress=False)
    assert images.shape == (2, 2, 64, 64, 3) and images.dtype == np.uint8
    scores = ufid.fit(sd, texts[:3], progress=False).clean_scores
    assert scores.shape == (3,) and np.isfinite(scores).all() and ufid.threshold == pytest.approx(
        np.quantile(scores, 0.95))
