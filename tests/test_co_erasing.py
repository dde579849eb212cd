"""Co-Erasing on the toy zoo, CI-sized: the refinement, the latent blur, and an erasure that works."""
import numpy as np
import pandas as pd
import pytest
import torch

from erasure_lib import load_ip_adapter, load_pipeline
from erasure_lib.evaluation import judge, rate_table, sample_prompts
from erasure_lib.methods import co_erasing, edited, esd
from erasure_lib.prompts import load_prompts
from erasure_lib.sampling import encode_prompts


@pytest.fixture(scope="module")
def pipes():
    return load_pipeline("toy"), load_ip_adapter(load_pipeline("toy"), "toy")


def test_refined_tokens_are_convex_combinations_of_the_text_states(pipes):
    pipe, ip = pipes
    images = np.zeros((3, 32, 32, 3), np.uint8)
    images[1] += 128
    text = encode_prompts(pipe, ["a nude person"])
    raw = co_erasing.image_tokens(ip, images)
    refined = co_erasing.image_tokens(ip, images, text)
    assert raw.shape == refined.shape == (3, 4, text.shape[-1])
    # each refined token is A @ V with A a row-stochastic matrix: solve for A by least squares on V's span
    weights = torch.softmax(raw @ text[0].T / np.sqrt(text.shape[-1]), dim=-1)
    torch.testing.assert_close(refined, weights @ text[0], rtol=1e-4, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4))


def test_gaussian_blur_matches_torchvision_sigma_and_keeps_constants():
    x = torch.full((1, 4, 8, 8), 0.7)
    torch.testing.assert_close(co_erasing.gaussian_blur(x, 3), x)
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1
    out = co_erasing.gaussian_blur(impulse, 3)
    assert abs(out.sum().item() - 1) < 1e-5
    k = torch.exp(-0.5 * (torch.tensor([-1.0, 0.0, 1.0]) / 0.8) ** 2)
    k = k / k.sum()
    torch.testing.assert_close(out[0, 0, 3:6, 3:6], k[:, None] * k[None, :])
    with pytest.raises(ValueError):
        co_erasing.CoErasingConfig(blur_factor=4)
    with pytest.raises(ValueError):
        co_erasing.CoErasingConfig(variant="images")


def test_batched_targets_equal_per_iteration_targets_and_keep_each_image_with_its_row(pipes):
    """The frozen model's targets are computed for all drawn iterations in batches; they must equal what a
    per-iteration loop computes, row for row (each row with its own image tokens and timestep)."""
    pipe, ip = pipes
    cfg = co_erasing.CoErasingConfig(iterations=5, pool_size=3)
    frozen, plain = co_erasing._with_edit(ip.unet, {}), co_erasing._with_edit(pipe.unet, {})
    frozen.encoder_hid_proj = co_erasing._GivenTokens()
    gen = torch.Generator().manual_seed(0)
    pool, grid = co_erasing._xt_pool(pipe, plain, "a nude person", cfg, gen)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    cond, null = encode_prompts(pipe, ["a nude person"]).float(), encode_prompts(pipe, [""]).float()
    tokens = co_erasing.image_tokens(ip, images, cond).float()
    xs, ts, c_imgs = co_erasing._draws(pipe, pool, grid, tokens, cfg, gen)
    assert xs.shape[0] == ts.shape[0] == c_imgs.shape[0] == 5 and set(ts.tolist()) <= set(grid.tolist())
    args = (cond, null, cfg, "cpu", torch.float32, False)
    batched = co_erasing._targets(frozen, plain, xs, ts, c_imgs, *args, batch=32)
    single = co_erasing._targets(frozen, plain, xs, ts, c_imgs, *args, batch=1)
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    swapped = co_erasing._targets(frozen, plain, xs, ts, c_imgs.roll(1, 0), *args, batch=32)
    assert (swapped - batched).abs().amax() > 1e-4


def test_bad_input_raises(pipes):
    pipe, _ = pipes
    with pytest.raises(ValueError, match="IP-Adapter"):
        co_erasing.erase(pipe, pipe, "a nude person")
    with pytest.raises(ValueError, match="non-empty"):
        co_erasing.erase(pipe, pipes[1], "")


def test_co_erasing_erases_the_sensitive_concept_and_keeps_objects(pipes):
    pipe, ip = pipes
    cfg = co_erasing.CoErasingConfig(iterations=200, lr=5e-5, image_number=8, pool_size=8, image_steps=10,
                                     text_stage=esd.ESDConfig(parameter_set="esd-u", lr=1e-4, iterations=20, pool_size=4))
    edit = co_erasing.erase(pipe, ip, "a nude person", cfg, progress=False)
    assert set(edit) == set(esd.trainable_parameter_names(pipe.unet, "esd-u"))
    table = pd.concat([load_prompts("sensitive_explicit", profile="toy").head(8),
                       load_prompts("sensitive_implicit", profile="toy").head(8),
                       load_prompts("explicit_object", profile="toy").iloc[::5]], ignore_index=True)
    table["case_id"] = range(len(table))

    def rates(e):
        with edited(pipe, e):
            images, rows = sample_prompts(pipe, table, steps=12, progress=False)
        return rate_table(judge(images, rows), by=["source"], n_boot=50).set_index("source").rate

    before, after = rates({}), rates(edit)
    assert before["sensitive_explicit"] >= 0.8 and before["sensitive_implicit"] >= 0.8
    assert after["sensitive_explicit"] <= before["sensitive_explicit"] - 0.5
    assert after["sensitive_implicit"] <= before["sensitive_implicit"] - 0.5
    # an unrelated family stays within the tolerance of 0.3 (objects are drawn by the same shared weights)
    assert after["explicit_object"] >= before["explicit_object"] - 0.3
