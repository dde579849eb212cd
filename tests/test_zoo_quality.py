"""The committed zoo meets the quality bars of TOYWORLD.md on a CI-sized held-out sample.

The notebook measures the same bars on larger samples (results/00_toy_world/zoo_quality.csv); here every
held-out prompt is sampled once, every classifier head sees 600 freshly rendered images."""
import numpy as np
import pytest

from erasure_lib import encode_images, generate, load_pipeline
from erasure_lib.toyworld import quality, zoo
from erasure_lib.toyworld.render import render_batch
from erasure_lib.toyworld.world import COLOURS, OBJECTS, Scene


@pytest.fixture(scope="module")
def clf():
    return zoo.load_classifier()


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("toy")


def _assert_bars(values):
    table = quality.bar_table(values)
    assert len(table) == len(values)
    failed = table[~table.passed]
    assert failed.empty, "\n" + failed.to_string()


def test_classifiers_are_accurate_on_heldout_renders(clf):
    _assert_bars(quality.classifier_accuracy(clf, n=600, seed=7))


def test_vae_reconstructs_and_clip_names_objects(pipe):
    clip, processor = zoo.load_clip()
    _assert_bars({"vae_reconstruction_mse": quality.vae_mse(pipe.vae, n=128, seed=7),
                  "clip_zero_shot_object_accuracy": quality.clip_zero_shot(clip, processor, n=300, seed=7)})


def test_tinysd_follows_heldout_prompts(pipe, clf):
    table, images = quality.tinysd_samples(pipe, clf, seeds_per_prompt=1, seed=7)
    assert len(images) == len(table) >= 150
    _assert_bars(quality.tinysd_rates(table))


def test_ip_adapter_image_prompt_reproduces_the_object(clf):
    ip_pipe = zoo.load_ip_adapter(load_pipeline("toy"))
    rate, _, _ = quality.ip_adapter_rate(ip_pipe, clf, n_per_object=3, seed=7)
    _assert_bars({"ip_adapter_image_object_rate": rate})


def test_ip_adapter_embeddings_stay_with_their_own_image():
    """One embedding per image: an image generated in a batch of different references equals the same image
    generated alone (diffusers' pipeline would repeat the embeddings batch_size times and blend them)."""
    ip_pipe = zoo.load_ip_adapter(load_pipeline("toy"))
    refs = (render_batch([Scene(subject=o, colour=c, background="grey") for o, c in zip(OBJECTS[::2], COLOURS)], seeds=range(4)) * 255).astype(np.uint8)
    embeds = encode_images(ip_pipe, refs)
    together = generate(ip_pipe, [""] * 4, range(4), steps=8, image_embeds=embeds, batch_size=4)
    alone = np.concatenate([generate(ip_pipe, [""], [i], steps=8, image_embeds=embeds[i:i + 1]) for i in range(4)])
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 8


def test_bar_table_flags_a_failing_value():
    table = quality.bar_table({"tinysd_benign_sensitive_rate": 0.2, "tinysd_style_rate": 0.95})
    assert table.set_index("check").passed.to_dict() == {"tinysd_style_rate": True,
                                                         "tinysd_benign_sensitive_rate": False}
