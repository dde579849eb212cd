"""The committed toy GAN (data/aigi_gan), chapter 40's ProGAN analog: loading, sampling contract, behaviour."""
import numpy as np
import pytest
import torch

from erasure_lib.toyworld import gan, zoo
from erasure_lib.toyworld.captions import caption, sample_scene
from erasure_lib.toyworld.world import SUBJECTS

CAPTIONS = ["a red gun at the beach", "a nude person", "a blue house on a grey background, in neon style",
            "a person wearing green", "a yellow goldfish, by vincent vael"]
SEEDS = [3, 1, 4, 1, 5]


@pytest.fixture(scope="module")
def parts():
    text_encoder, tokenizer = gan.load_text_tower()
    return gan.load_gan(), text_encoder, tokenizer


def test_committed_generator_loads_and_is_small(parts):
    generator = parts[0]
    assert isinstance(generator, gan.ToyGANGenerator) and not generator.training
    weights = zoo.data_dir() / "aigi_gan" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 4 * 2**20
    assert generator.config.cond_dim == parts[1].config.hidden_size


def test_generate_dtype_shape_and_determinism(parts):
    a = gan.generate(*parts, CAPTIONS, SEEDS)
    assert a.dtype == np.uint8 and a.shape == (5, 32, 32, 3)
    assert np.array_equal(a, gan.generate(*parts, CAPTIONS, SEEDS))
    assert a.std() > 10  # not a blank image


def test_generate_does_not_depend_on_batch_size(parts):
    assert np.array_equal(gan.generate(*parts, CAPTIONS, SEEDS, batch_size=2),
                          gan.generate(*parts, CAPTIONS, SEEDS, batch_size=5))


def test_seed_and_caption_change_the_image(parts):
    same_caption = gan.generate(*parts, ["a red gun at the beach"] * 2, [0, 1])
    assert not np.array_equal(same_caption[0], same_caption[1])
    same_seed = gan.generate(*parts, ["a green church at the beach"], [0])
    assert not np.array_equal(same_caption[0], same_seed[0])


@pytest.mark.parametrize("captions, seeds, match", [
    (["a red gun"], [1, 2], "one seed per caption"),
    ([], [], "no captions"),
    ("a red gun", [1], "not one string"),
    (["a red gun", 3], [1, 2], "must be a string"),
])
def test_bad_input_raises_clear_errors(parts, captions, seeds, match):
    with pytest.raises(ValueError, match=match):
        gan.generate(*parts, captions, seeds)


def test_generator_draws_the_captioned_subject(parts):
    """The zoo classifier finds the caption's subject in GAN images well above chance (1/9): an independent bar
    of 0.5 on 64 fresh scenes (the committed generator: 0.86 on 512 other fresh scenes; real renders: 1.0)."""
    from erasure_lib.metrics.concept import predict_concepts
    rng = np.random.default_rng(2026)
    scenes = [sample_scene(rng) for _ in range(64)]
    captions = [caption(s, rng) for s in scenes]
    images = gan.generate(*parts, captions, range(64))
    table = predict_concepts(images)
    rate = np.mean([label == s.subject for label, s in zip(table.object, scenes)])
    assert 1 / len(SUBJECTS) < 0.5 <= rate, f"subject recognised in {rate:.2f} of the GAN's images"


def test_forward_is_batch_independent_at_float_level(parts):
    generator = parts[0]
    z, cond = torch.randn(3, generator.config.z_dim), torch.randn(3, generator.config.cond_dim)
    with torch.no_grad():
        full = generator(z, cond)
        single = torch.cat([generator(z[i:i + 1], cond[i:i + 1]) for i in range(3)])
    assert full.shape == (3, 3, 32, 32)
    torch.testing.assert_close(full, single, atol=1e-5, rtol=0)
