"""Chapter 40's detectors, benchmark and metrics (issue: NS-Net), CI-sized."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from erasure_lib.detect import aigi_bench as bench
from erasure_lib.detect import ns_net
from erasure_lib.metrics.detection import aigi_metrics, average_precision


# --- metrics against hand-worked values ---------------------------------------------------------------------

def test_average_precision_hand_worked():
    # ranks: 1 (pos, P=1/1), 2 (neg), 3 (pos, P=2/3), 4 (neg): AP = (1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    assert average_precision([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == pytest.approx(1.0)
    # positives last: P = 1/3 then 2/4
    assert average_precision([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == pytest.approx((1 / 3 + 2 / 4) / 2)
    # a tie of one positive and one negative is one threshold: precision 1/2 there
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        average_precision([0.5, 0.4], [1, 1])


def test_aigi_metrics_hand_worked():
    est = aigi_metrics([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1], n_boot=200)
    assert est["real_acc"].value == pytest.approx(0.5)      # 0.2 kept real, 0.6 called generated
    assert est["fake_acc"].value == pytest.approx(0.5)      # 0.9 caught, 0.4 missed
    assert est["acc"].value == pytest.approx(0.5)
    assert est["ap"].value == pytest.approx((1 + 2 / 3) / 2)   # ranks 0.9 (+), 0.6 (-), 0.4 (+)
    assert est["acc"].lo <= 0.5 <= est["acc"].hi


# --- the benchmark ------------------------------------------------------------------------------------------

def test_generators_cover_three_families_and_eight_sources():
    assert len(bench.TOY_GENERATORS) >= 8
    assert {g.family for g in bench.TOY_GENERATORS} == {"diffusion", "autoencoder", "gan"}
    assert set(bench.TRAIN_GENERATORS) <= {g.name for g in bench.TOY_GENERATORS}
    with pytest.raises(ValueError, match="unknown generator"):
        bench.generator("Midjourney")


def test_splits_are_by_scene_never_by_image():
    train = bench.scene_set("train", 300)
    test = bench.scene_set("test", 300)
    assert not set(train.keys) & set(test.keys)
    assert all(bench.split_of(k) == "train" for k in train.keys)
    # the scene keys of the whole world fall about 60 / 10 / 30 into the splits
    from itertools import product

    from erasure_lib.toyworld.world import BACKGROUNDS, COLOURS, OBJECTS, STYLES
    keys = [f"{o}|{c}|{b}|{s}|0" for o, c, b, s in product(OBJECTS, COLOURS, BACKGROUNDS, ("none",) + STYLES)]
    share = {s: np.mean([bench.split_of(k) == s for k in keys]) for s in bench.SPLITS}
    assert share["train"] == pytest.approx(0.6, abs=0.06) and share["test"] == pytest.approx(0.3, abs=0.06)
    assert bench.scene_set("test", 20).captions == bench.scene_set("test", 20).captions
    with pytest.raises(ValueError, match="unknown split"):
        bench.scene_set("holdout", 3)


def test_test_split_pairs_every_generator_with_the_real_captions(toy_pipe):
    split = bench.build_split(toy_pipe, "test", 12, ["VAE", "GAN"], n_fake=12)
    assert split.images.shape == (36, 32, 32, 3) and split.images.dtype == np.uint8
    real = [c for c, s in zip(split.captions, split.source) if s == "real"]
    for g in ("VAE", "GAN"):
        assert [c for c, s in zip(split.captions, split.source) if s == g] == real
    assert (split.labels == (split.source != "real")).all()


def test_real_and_fake_share_semantics_by_the_judge(toy_pipe):
    scenes = bench.scene_set("val", 48)
    table = bench.judge_table(toy_pipe, ["real", "VAE", "GAN"], scenes)
    rate = dict(zip(table.source, table.subject))
    assert rate["real"] >= 0.95            # the classifier's bar on renders is 98%
    assert rate["VAE"] >= 0.9 and rate["GAN"] >= 0.6


# --- detectors ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy")


@pytest.fixture(scope="module")
def backbone():
    return ns_net.Backbone.toy()


@pytest.fixture(scope="module")
def gan_data(toy_pipe):
    """A small training split (real + GAN) and held-out test images of the same generator (other scenes)."""
    train = bench.build_split(toy_pipe, "train", 512, ["GAN"], n_fake=512)
    test = bench.build_split(toy_pipe, "test", 128, ["GAN"], n_fake=128)
    return train, test


@pytest.fixture(scope="module")
def fitted(backbone, gan_data):
    train, _ = gan_data
    return ns_net.NSNet(backbone, ns_net.NSNetConfig(epochs=4)).fit(train.images, train.labels)


def test_ns_net_beats_chance_on_held_out_images_of_its_training_generator(fitted, gan_data):
    _, test = gan_data
    p = fitted.predict_proba(test.images)
    acc = float(((p > 0.5) == test.labels).mean())
    # chance: 0.5, and 0.56 is two binomial standard deviations above it on 128 real + 128 generated images
    # (measured on three configurations: 0.60 to 0.65; the toy CLIP is a weak backbone, chapter 40)
    assert acc >= 0.56, acc


def test_save_load_round_trip(fitted, gan_data, backbone, tmp_path):
    _, test = gan_data
    path = fitted.save(tmp_path / "ns.safetensors")
    again = ns_net.NSNet.load(path, backbone)
    assert again.config == fitted.config
    np.testing.assert_array_equal(again.predict_proba(test.images), fitted.predict_proba(test.images))
    with pytest.raises(ValueError, match="not 'univfd'"):
        ns_net.UnivFD.load(path, backbone)


def test_baselines_fit_predict_and_round_trip(backbone, gan_data, tmp_path):
    train, test = gan_data
    for det in (ns_net.UnivFD(backbone, ns_net.ProbeConfig(epochs=50)),
                ns_net.SmallCNN(ns_net.CNNConfig(epochs=2))):
        det.fit(train.images, train.labels)
        p = det.predict_proba(test.images)
        assert p.shape == (len(test),) and ((0 <= p) & (p <= 1)).all()
        again = type(det).load(det.save(tmp_path / f"{det.kind}.safetensors"), backbone)
        np.testing.assert_allclose(again.predict_proba(test.images), p, rtol=0, atol=1e-6)


def test_the_projection_removes_the_captions_from_the_features(fitted, gan_data):
    _, test = gan_data
    images = test.images[:16]
    captions = fitted.backbone.captioner(images)
    f = fitted.features(images, captions)
    v = fitted.backbone.text_features(captions)
    # each decoupled feature is orthogonal to every caption feature of its batch (up to the ridge)
    cos = (torch.nn.functional.normalize(f, dim=1) @ torch.nn.functional.normalize(v, dim=1).T).abs()
    assert cos.max() < 1e-2
    u = ns_net.NSNet(fitted.backbone, ns_net.NSNetConfig(projection=None))
    u.vision, u.head, u.fitted = fitted.vision, fitted.head, True
    assert (torch.nn.functional.normalize(u.features(images, captions), dim=1)
            @ torch.nn.functional.normalize(v, dim=1).T).abs().max() > 0.05


def test_bad_input_gets_a_clear_error(fitted, gan_data):
    _, test = gan_data
    with pytest.raises(ValueError, match="one image is not a batch"):
        fitted.predict_proba(test.images[:1])
    with pytest.raises(ValueError, match="empty"):
        fitted.predict_proba(test.images[:0])
    with pytest.raises(TypeError, match="uint8"):
        fitted.predict_proba(test.images.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        fitted.predict_proba(test.images[..., :2])
    with pytest.raises(ValueError, match="one caption per image"):
        fitted.predict_proba(test.images[:4], captions=["a red gun"])
    with pytest.raises(RuntimeError, match="not fitted"):
        ns_net.NSNet(fitted.backbone).predict_proba(test.images[:4])
    with pytest.raises(ValueError, match="both real"):
        ns_net.NSNet(fitted.backbone).fit(test.images[:4], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="unknown projection"):
        ns_net.NSNetConfig(projection="svd")
    with pytest.raises(ValueError, match="wrong|need 32 x 32"):
        ns_net.SmallCNN().fit(np.zeros((4, 16, 16, 3), np.uint8), [0, 1, 0, 1])


def test_per_image_mode_scores_a_single_image(backbone, gan_data):
    train, test = gan_data
    det = ns_net.NSNet(backbone, ns_net.NSNetConfig(projection="per_image", epochs=1)).fit(
        train.images[::4], train.labels[::4])
    one = det.predict_proba(test.images[:1])
    assert one.shape == (1,)
    # per-image projection: a score does not depend on the other images scored with it
    assert det.predict_proba(test.images[:5])[0] == pytest.approx(float(one[0]), abs=1e-6)


def test_sd14_config_is_the_spec_s():
    cfg = ns_net.NSNetConfig.sd14()
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout) == (6, 6.0, 0.8)
    assert cfg.target_modules == ("q_proj", "k_proj", "v_proj")
    assert (cfg.patch.patch, cfg.patch.n_low, cfg.patch.n_high) == (32, 24, 25)
    assert (cfg.lr, cfg.batch_size) == (1e-4, 32)
    assert ns_net.NSNetConfig.from_json(cfg.to_json()) == cfg


def test_the_second_unet_draws_its_captions(toy_pipe):
    """The committed second UNet (half the width, own seed and data) is a working generator, not noise: the zoo's
    classifier finds the caption's subject in most of its images (the zoo's own bar for TinySD is 0.9)."""
    scenes = bench.scene_set("val", 32, seed=3)
    images = bench.images_of(toy_pipe, "SmallUNet", scenes)
    rates = bench.judge(images, scenes)
    assert rates["subject"] >= 0.8 and rates["style"] >= 0.8, rates
    # and it is another model than TinySD: other images from the same captions and seeds
    assert np.abs(images.astype(int) - bench.images_of(toy_pipe, "TinySD", scenes).astype(int)).mean() > 5


def test_average_precision_with_several_tie_groups():
    # thresholds 0.5 (2 positives of 3 images: P = 2/3, recall gain 2/3) and 0.2 (3 of 4: P = 3/4, gain 1/3)
    assert average_precision([0.5, 0.5, 0.5, 0.2], [1, 1, 0, 1]) == pytest.approx(2 / 3 * 2 / 3 + 1 / 3 * 3 / 4)


def test_paired_accuracy_difference_hand_worked():
    from erasure_lib.detect.aigi_eval import paired_accuracy_difference
    y = np.array([0, 0, 1, 1])
    # detector A: everything right on g1, one fake missed on g2; B: one real wrong on both, all fakes right
    a = {0: {"g1": (np.array([.1, .2, .9, .8]), y), "g2": (np.array([.1, .2, .9, .3]), y)}}
    b = {0: {"g1": (np.array([.1, .7, .9, .8]), y), "g2": (np.array([.1, .7, .9, .8]), y)}}
    est = paired_accuracy_difference(a, b, ["g1", "g2"], n_boot=200)
    assert est.value == pytest.approx(((4 - 3) / 4 + (3 - 3) / 4) / 2)
    assert est.lo <= est.value <= est.hi
    with pytest.raises(ValueError, match="same seeds"):
        paired_accuracy_difference(a, {1: b[0]}, ["g1"])


def test_fit_many_gives_the_same_detectors_in_threads(backbone, gan_data):
    from erasure_lib.detect.aigi_eval import fit_many
    train, test = gan_data
    small = train.of(["real", "GAN"])
    jobs = [("NS-Net", 0, {"epochs": 1}), ("CLIP+LoRA", 1, {"epochs": 1}), ("CNN", 0, {})]
    one = fit_many(jobs, backbone, small, workers=1)
    two = fit_many(jobs, backbone, small, workers=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.predict_proba(test.images[:32]), b.predict_proba(test.images[:32]))


def test_detector_cache_round_trip(backbone, gan_data, tmp_path):
    from erasure_lib.detect.aigi_eval import fitted_detector
    train, test = gan_data
    first = fitted_detector("NS-Net", backbone, train, cache_dir=tmp_path, epochs=1, projection="global_svd")
    again = fitted_detector("NS-Net", backbone, train, cache_dir=tmp_path, epochs=1, projection="global_svd")
    assert len(list((tmp_path / "detectors").glob("*.safetensors"))) == 1
    assert again.global_projector is not None
    np.testing.assert_array_equal(again.predict_proba(test.images[:16]), first.predict_proba(test.images[:16]))


def test_image_folders_in_the_benchmarks_layouts(tmp_path):
    from PIL import Image
    for rel in ("0_real/a.png", "0_real/b.jpg", "1_fake/c.png", "ldm/0_real/d.png", "ldm/1_fake/e.png",
                "glide/cat/1_fake/f.png", "notes.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            path.write_text("x")
        else:
            Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(path)
    files = bench.read_image_folder(tmp_path)
    assert {k: [p.name for p in v] for k, v in files.items()} == {
        "real": ["a.png", "b.jpg", "d.png"], "external": ["c.png"], "ldm": ["e.png"], "glide": ["f.png"]}
    images = bench.load_images(files["real"], size=32)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    (tmp_path / "captions.json").write_text('{"0_real/a.png": "a cat"}')
    with pytest.raises(KeyError, match="no caption for 0_real/b.jpg"):
        bench.read_captions(tmp_path, files["real"])
    with pytest.raises(FileNotFoundError):
        bench.read_image_folder(tmp_path / "missing")


def test_caption_lookup_knows_its_images_and_asks_the_fallback(gan_data):
    train, _ = gan_data
    lookup = bench.CaptionLookup([train])
    assert lookup(train.images[:3]) == train.captions[:3]
    other = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(KeyError, match="without a known caption"):
        lookup(other)
    asked = bench.CaptionLookup([train], fallback=lambda ims: ["fallback"] * len(ims))
    assert asked(np.concatenate([train.images[:1], other[:1]])) == [train.captions[0], "fallback"]


def test_make_detector_knows_its_profiles(backbone):
    assert ns_net.make_detector("NS-Net", backbone, profile="sd14").config == ns_net.NSNetConfig.sd14()
    assert ns_net.make_detector("CLIP+LoRA", backbone, seed=2).config.projection is None
    with pytest.raises(ValueError, match="unknown profile"):
        ns_net.make_detector("NS-Net", backbone, profile="sdxl")
    with pytest.raises(ValueError, match="unknown detector"):
        ns_net.make_detector("DIRE", backbone)
