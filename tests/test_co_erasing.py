"""Co-Erasing on the toy zoo, CI-sized: the refinement, the latent blur, the batched targets, the reference-code
flags (bug_compatible_sampling, clip_normalisation, text_uncond, noise_factor), and an erasure that works."""
import numpy as np
import pandas as pd
import pytest
import torch

from erasure_lib import load_ip_adapter, load_pipeline
from erasure_lib.evaluation import judge, rate_table, sample_prompts
from erasure_lib.methods import co_erasing, edited, esd
from erasure_lib.prompts import load_prompts
from erasure_lib.sampling import encode_prompts, set_steps


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
    plain = pipe.unet
    gen = torch.Generator().manual_seed(0)
    pool, grid = co_erasing._xt_pool(pipe, plain, "a nude person", cfg, gen)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    cond, null = encode_prompts(pipe, ["a nude person"]).float(), encode_prompts(pipe, [""]).float()
    tokens = co_erasing.image_tokens(ip, images, cond).float()
    xs, ts, c_imgs = co_erasing._draws(pipe, pool, grid, tokens, cfg, gen)
    assert xs.shape[0] == ts.shape[0] == c_imgs.shape[0] == 5 and set(ts.tolist()) <= set(grid.tolist())
    args = (cond, null, cfg, "cpu", torch.float32, False)
    with co_erasing._given_tokens(ip.unet) as frozen:
        batched = co_erasing._targets(frozen, plain, xs, ts, c_imgs, *args, batch=32)
        single = co_erasing._targets(frozen, plain, xs, ts, c_imgs, *args, batch=1)
        swapped = co_erasing._targets(frozen, plain, xs, ts, c_imgs.roll(1, 0), *args, batch=32)
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    assert (swapped - batched).abs().amax() > 1e-4
    assert type(ip.unet.encoder_hid_proj).__name__ == "MultiIPAdapterImageProjection"  # put back


def test_bug_compatible_sampling_walks_the_grid_upward_from_x_T(pipes):
    """The reference's ``denoise_to_text_timestep`` (spec section 7, bug 1): from x_T, step through the grid in
    ascending order (t = 1 first) and keep the latent after t_ref + 1 steps for the reference's index t_ref,
    which is trained at t_ddpm in [w t_ref, w (t_ref + 1)). Here index r = steps - 1 - t_ref."""
    pipe, _ = pipes
    steps, T = 10, pipe.scheduler.config.num_train_timesteps
    width = T // steps
    plain = pipe.unet
    base = dict(pool_size=2, ddim_steps=steps, start_guidance=1.0, blur_factor=0, timestep="bin", iterations=40)
    faithful, grid = co_erasing._xt_pool(pipe, plain, "a nude person", co_erasing.CoErasingConfig(**base),
                                         torch.Generator().manual_seed(0))
    cfg = co_erasing.CoErasingConfig(bug_compatible_sampling=True, **base)
    bug, grid_bug = co_erasing._xt_pool(pipe, plain, "a nude person", cfg, torch.Generator().manual_seed(0))
    assert bug.shape == faithful.shape == (2, steps, 4, 8, 8) and torch.equal(grid, grid_bug)
    assert grid.tolist() == [T - width * (r + 1) + 1 for r in range(steps)]  # 901, ..., 1
    x_T = faithful[:, 0]  # the faithful pool's index 0 is the latent entering the first step: x_T (same seeds)
    cond = encode_prompts(pipe, ["a nude person"] * 2)
    abar = pipe.scheduler.alphas_cumprod
    final = torch.tensor(1.0) if pipe.scheduler.config.set_alpha_to_one else abar[0]

    def ddim_step(z, t):  # deterministic DDIM step from t to t - width, conditional prediction only (no CFG)
        with torch.no_grad():
            eps = plain(z, t, encoder_hidden_states=cond).sample
        a_t, a_prev = abar[t], abar[t - width] if t - width >= 0 else final
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps

    z = x_T
    for r in reversed(range(steps)):  # t = 1, 101, ..., 901: the walk goes *up* the noise levels
        z = ddim_step(z, int(grid[r]))
        torch.testing.assert_close(bug[:, r], z, rtol=1e-4, atol=1e-4)
    assert (bug[:, 0] - x_T).abs().amax() > 0.1 and (bug - faithful).abs().amax() > 0.1
    # with timestep="bin", each drawn (x_t, t) pairs the latent after t_ref + 1 upward steps with a t in
    # [w t_ref, w (t_ref + 1)), as the reference pairs z and t_ddpm
    xs, ts, _ = co_erasing._draws(pipe, bug, grid, torch.zeros(1, 4, 8), cfg, torch.Generator().manual_seed(1))
    seen, offsets = set(), set()
    for x, t in zip(xs, ts.tolist(), strict=True):
        (r,) = {r for k in range(2) for r in range(steps) if torch.equal(bug[k, r], x)}
        t_ref = steps - 1 - r
        assert width * t_ref <= t < width * (t_ref + 1), (t, t_ref)
        seen.add(t_ref)
        offsets.add(t - width * t_ref)
    assert len(seen) > 3 and len(offsets) > 10  # random in the bin, not one fixed point of it


def test_clip_normalisation_false_normalises_pixels_with_half_half(pipes):
    """The image tokens of ``clip_normalisation=False`` are those of pixels (x / 255 - 0.5) / 0.5 (the reference's
    Normalize(0.5, 0.5), bug 3); the default's are those of CLIP's mean/std. Computed here by hand: the images
    are at the encoder's 32 px, so the feature extractor's resize and crop leave them as they are."""
    _, ip = pipes
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    unit = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    clip_mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)  # OpenAI CLIP's statistics
    clip_std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    proj = ip.unet.encoder_hid_proj.image_projection_layers[0]
    with torch.no_grad():
        by_hand = {name: proj(ip.image_encoder(pixels).image_embeds)
                   for name, pixels in (("half", (unit - 0.5) / 0.5), ("clip", (unit - clip_mean) / clip_std))}
    half = co_erasing.image_tokens(ip, images, clip_normalisation=False)
    clip = co_erasing.image_tokens(ip, images)
    torch.testing.assert_close(clip, by_hand["clip"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(half, by_hand["half"], rtol=1e-4, atol=1e-5)
    assert (half - clip).abs().amax() > 1e-2


def test_text_uncond_false_takes_e_0_from_the_ip_unet_with_the_image_tokens(pipes):
    """With eta = 0 the target is e_0 itself: the text-only UNet on the empty prompt (``text_uncond``), or the
    IP-UNet on the empty prompt and the image tokens (``text_uncond=False``); with eta = 1 it is 2 e_0 - e_c."""
    pipe, ip = pipes
    plain = pipe.unet
    gen = torch.Generator().manual_seed(0)
    xs, ts = torch.randn(4, 4, 8, 8, generator=gen), torch.tensor([901, 601, 301, 1])
    cond, null = encode_prompts(pipe, ["a nude person"]).float(), encode_prompts(pipe, [""]).float()
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    c_imgs = co_erasing.image_tokens(ip, images, cond).float()[[0, 1, 1, 0]]

    def targets(**kw):
        cfg = co_erasing.CoErasingConfig(iterations=4, **kw)
        return co_erasing._targets(frozen, plain, xs, ts, c_imgs, cond, null, cfg, "cpu", torch.float32, False)

    with torch.no_grad(), co_erasing._given_tokens(ip.unet) as frozen:
        image = {"image_embeds": [c_imgs]}
        e_0_ip = frozen(xs, ts, encoder_hidden_states=null.expand(4, -1, -1), added_cond_kwargs=image).sample
        e_0_text = plain(xs, ts, encoder_hidden_states=null.expand(4, -1, -1)).sample
        e_c = frozen(xs, ts, encoder_hidden_states=cond.expand(4, -1, -1), added_cond_kwargs=image).sample
        close = dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(targets(text_uncond=False, negative_guidance=0.0), e_0_ip, **close)
        torch.testing.assert_close(targets(text_uncond=True, negative_guidance=0.0), e_0_text, **close)
        torch.testing.assert_close(targets(text_uncond=False, negative_guidance=1.0), 2 * e_0_ip - e_c, **close)
    assert (e_0_ip - e_0_text).abs().amax() > 1e-3  # the image tokens do change e_0


def test_noise_factor_adds_fresh_uniform_noise_to_the_drawn_image_tokens(pipes):
    """Each drawn c_img is one image's tokens plus noise_factor * U[0, 1) (fresh per iteration), or exactly the
    tokens with noise_factor 0. The token rows are 2 apart, so the row a noisy draw came from is known."""
    pipe, _ = pipes
    steps, nf = 10, 0.5
    pool, grid = torch.randn(2, steps, 4, 8, 8), set_steps(pipe, steps).cpu()
    tokens = 2.0 * torch.arange(3.0)[:, None, None] + torch.linspace(0, 0.25, 4 * 16).view(1, 4, 16)
    draws = {}
    for f in (0.0, nf):
        cfg = co_erasing.CoErasingConfig(iterations=40, ddim_steps=steps, blur_factor=0, noise_factor=f)
        _, _, draws[f] = co_erasing._draws(pipe, pool, grid, tokens, cfg, torch.Generator().manual_seed(0))
    rows = lambda c: (c[:, None] - tokens[None]).abs().amax((2, 3)).argmin(1)  # noqa: E731
    clean, noisy = draws[0.0], draws[nf]
    assert torch.equal(clean, tokens[rows(clean)]) and len(set(rows(clean).tolist())) == 3
    noise = noisy - tokens[rows(noisy)]
    assert len(set(rows(noisy).tolist())) == 3
    assert noise.min() >= -1e-6 and noise.max() < nf  # in [0, noise_factor): uniform, not Gaussian
    assert noise.min() < 0.02 * nf and noise.max() > 0.98 * nf and abs(float(noise.mean()) - nf / 2) < 0.02
    assert (noise[0] - noise[1]).abs().amax() > 0.1  # fresh noise per iteration, not one draw reused


def test_bad_input_raises(pipes):
    pipe, _ = pipes
    with pytest.raises(ValueError, match="IP-Adapter"):
        co_erasing.erase(pipe, pipe, "a nude person")
    with pytest.raises(ValueError, match="non-empty"):
        co_erasing.erase(pipe, pipes[1], "")


# --- issue 10: memory -------------------------------------------------------------------------------------------
# Fingerprints (erasure_lib.methods.cache.edit_fingerprint) of toy Co-Erasing edits made by the implementation
# *before* issue 10 (the committed HEAD ac5c352: deep copies of both UNets and an fp32 copy trained), computed by
# running that code (git archive HEAD, on CPU, one thread) with exactly these configurations, concept
# "a nude person", pipes = (load_pipeline("toy"), load_ip_adapter(load_pipeline("toy"), "toy")).
SMALL = dict(pool_size=2, ddim_steps=10)
TEXT = dict(parameter_set="esd-u", iterations=3, **SMALL)
# Each machine the old code ran on contributes its fingerprint (CPUs differ in their floating-point kernels; the
# second: an AMD EPYC with AVX-512, 2026-12-04), as in test_esd.
BEFORE_ISSUE_10 = {
    "full": (dict(iterations=4, image_number=2, image_steps=4),
             {"93c5d1ed870918e19ca5fbd681ff4bda7f41f984294d53fc72569e65a36dadff",
              "2de5a4cef7edc1dc4e5ee2e3463805cfbe7a857a3628a6e1903e079d4370bf2e"}),
    "reference flags": (dict(iterations=4, image_number=2, image_steps=4, text_uncond=False, timestep="bin",
                             bug_compatible_sampling=True),
                        {"d1123a856bd5c4821a590162ea56cba5be3e9fecc2f5cfd64f37ceac9af8c6b9",
                         "a85d88da7b03b5394082071c5c88b2b35f6b1c7a33318f20062cafefa40c22f4"}),
}


def _small(case, **extra):
    overrides, fingerprint = BEFORE_ISSUE_10[case]
    return co_erasing.CoErasingConfig(text_stage=esd.ESDConfig(**TEXT), **overrides, **SMALL, **extra), fingerprint


@pytest.mark.parametrize("case", list(BEFORE_ISSUE_10))
def test_toy_edits_are_bit_identical_to_the_implementation_before_issue_10(pipes, case, monkeypatch):
    """... and no module is deep-copied on the way: ``nn.Module.__deepcopy__`` raises during the run."""
    from erasure_lib.methods.cache import edit_fingerprint
    pipe, ip = pipes
    states = [edit_fingerprint(dict(p.unet.state_dict())) for p in pipes]

    def refuse(self, memo):
        raise AssertionError(f"Co-Erasing deep-copied a {type(self).__name__}")

    monkeypatch.setattr(torch.nn.Module, "__deepcopy__", refuse, raising=False)
    cfg, fingerprint = _small(case)
    assert edit_fingerprint(co_erasing.erase(pipe, ip, "a nude person", cfg, progress=False)) in fingerprint
    assert [edit_fingerprint(dict(p.unet.state_dict())) for p in pipes] == states  # both as they were
    assert type(ip.unet.encoder_hid_proj).__name__ == "MultiIPAdapterImageProjection"


def test_one_pipeline_with_the_ip_adapter_loaded_gives_the_same_edit(pipes):
    """``ip_pipe = pipe`` (the IP-Adapter loaded into the plain pipeline: one UNet, text encoder, VAE and image
    encoder) gives the two-pipeline edit bit for bit; the IP-Adapter is back on afterwards."""
    from erasure_lib.methods.cache import edit_fingerprint
    one = load_ip_adapter(load_pipeline("toy"), "toy")
    processors = {k: type(v).__name__ for k, v in one.unet.attn_processors.items()}
    state = edit_fingerprint(dict(one.unet.state_dict()))
    cfg, fingerprint = _small("full")
    edit = co_erasing.erase(one, one, "a nude person", cfg, progress=False)
    assert edit_fingerprint(edit) in fingerprint
    assert {k: type(v).__name__ for k, v in one.unet.attn_processors.items()} == processors
    assert edit_fingerprint(dict(one.unet.state_dict())) == state
    assert type(one.unet.encoder_hid_proj).__name__ == "MultiIPAdapterImageProjection"
    with pytest.raises(ValueError, match="IP-Adapter"):  # a plain pipeline cannot be both
        co_erasing.erase(pipes[0], pipes[0], "a nude person", cfg, progress=False)


def test_stage_2_gradient_checkpointing_gives_the_same_losses(pipes):
    pipe, ip = pipes
    text = esd.erase(pipe, "a nude person", esd.ESDConfig(**TEXT), progress=False)
    logs = {}
    for on in (False, True):
        logs[on] = []
        cfg = co_erasing.CoErasingConfig(iterations=3, image_number=2, image_steps=4, gradient_checkpointing=on,
                                         **SMALL)
        co_erasing.erase(pipe, ip, "a nude person", cfg, progress=False, log=logs[on], text_edit=text)
    assert not ip.unet.is_gradient_checkpointing
    assert np.abs(np.array([e["loss"] for e in logs[True]]) - [e["loss"] for e in logs[False]]).max() <= 1e-6
    assert co_erasing.CoErasingConfig.sd14().gradient_checkpointing
    assert co_erasing.CoErasingConfig.sd14().text_stage.gradient_checkpointing


# The default configuration on the toy (measured when written, 10 DDIM steps, 2 seeds per prompt: explicit
# 1.0 -> 0.43, implicit 1.0 -> 0.18, other objects 1.0 -> 0.91, look-alikes 0.98). The neighbour tolerance is
# one that chapter 10's first edit (other objects 0.85, with ESD-u's text stage at the unstable lr 1e-4) fails.
NEIGHBOUR_TOLERANCE = 0.12


def test_co_erasing_default_config_erases_the_sensitive_concept_and_keeps_neighbours(pipes):
    pipe, ip = pipes
    edit = co_erasing.erase(pipe, ip, "a nude person", progress=False)  # CoErasingConfig() as it is
    assert set(edit) == set(esd.trainable_parameter_names(pipe.unet, "esd-u"))
    table = pd.concat([load_prompts(s, profile="toy") for s in
                       ("sensitive_explicit", "sensitive_implicit", "explicit_object", "lookalike")], ignore_index=True)
    table["case_id"] = [f"{s}/{c}" for s, c in zip(table.source, table.case_id)]

    def rates(e):
        with edited(pipe, e):
            images, rows = sample_prompts(pipe, table, steps=10, progress=False)
        return rate_table(judge(images, rows), by=["source"], n_boot=50).set_index("source").rate

    before, after = rates({}), rates(edit)
    assert before["sensitive_explicit"] >= 0.9 and before["sensitive_implicit"] >= 0.9
    assert after["sensitive_explicit"] <= before["sensitive_explicit"] - 0.4, after
    assert after["sensitive_implicit"] <= before["sensitive_implicit"] - 0.5, after
    assert after["explicit_object"] >= before["explicit_object"] - NEIGHBOUR_TOLERANCE, (before, after)
    assert after["lookalike"] >= before["lookalike"] - NEIGHBOUR_TOLERANCE, (before, after)
