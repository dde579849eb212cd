"""ESD (erasure_lib.methods.esd) on the toy model, in a CI-sized configuration.

Asserted: each parameter set selects exactly the tensors its rule names (diffusers names; spec esd.md 2.2) and
they partition the UNet as they should; a rule that selects nothing raises; the up-front trajectory pool gives
exactly the x_t of ``latents_at`` and the frozen model's noise predictions at (x_t, t); ``erase`` returns only the
selected tensors, trains all of them, leaves the pipeline untouched and is deterministic for a seed; the
negative-guidance target has hand-computed values in both conventions, and a cond_base eta-2 run gives the
uncond_base eta-1 edit; ``timestep="bin"`` draws t at random in its DDIM index's bin; ``sample_from="trained"``
samples every refreshed pool with the copy being trained (``"frozen"``: once, with pipe.unet); and a short
ESD-x run (CI_CONFIG, about a minute on one thread) lowers the toy sensitive rate on held-out explicit prompts
from >= 0.9 to <= ERASE_MAX while the object rate on held-out explicit object prompts (unrelated concepts) stays
within KEEP_TOLERANCE of the unedited model's.
"""
import numpy as np
import pytest
import torch

from erasure_lib.methods import edited, esd
from erasure_lib.sampling import latents_at, set_steps

# CI-sized: the toy defaults (ESD-x, lr 1e-3, eta 1, batch 1) with 300 iterations instead of 1000 and 16
# trajectories in the pool instead of 32. Measured when written: sensitive rate on the explicit prompts
# 1.00 -> 0.43, objects 1.00 -> 1.00, about 20 s of training on one thread (1000 iterations: 1.00 -> 0.27).
# The concept is phrased as the toy's captions phrase it: the bare keyword "nude" is erased from the prompt
# "nude" itself but the erasure does not carry over to "a nude person ..." on the toy (see the report).
CI_CONCEPT = "a nude person"
CI_CONFIG = esd.ESDConfig(parameter_set="esd-x", iterations=300, pool_size=16)
ERASE_MAX = 0.6
KEEP_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy", device="cpu")


@pytest.fixture(scope="module")
def names(pipe):
    return [n for n, _ in pipe.unet.named_parameters()]


def test_parameter_sets(pipe, names):
    sel = {ps: esd.trainable_parameter_names(pipe.unet, ps) for ps in esd.PARAMETER_SETS}
    attn2 = [n for n in names if ".attn2." in n]
    # ESD-x: every tensor of every cross-attention (q, k, v, out weight + out bias), 7 blocks x 5 on the toy
    assert sel["esd-x"] == attn2 and len(attn2) == 7 * 5
    assert {n.split("attn2.")[1] for n in attn2} == {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight",
                                                     "to_out.0.bias"}
    # ESD-x-strict: only the key and value projections
    assert sel["esd-x-strict"] == [n for n in attn2 if n.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]
    assert len(sel["esd-x-strict"]) == 14
    # ESD-u (ldm noxattn): everything but attn2, time_embedding and the output norm/conv; norms and
    # time_emb_proj are trained; it and ESD-x and the three excluded groups partition the UNet
    u = sel["esd-u"]
    assert sel["esd-u-ldm"] == u
    assert not any(".attn2." in n or n.startswith(("time_embedding.", "conv_norm_out.", "conv_out.")) for n in u)
    for must in ("conv_in.weight", "down_blocks.0.resnets.0.norm1.weight",
                 "down_blocks.0.resnets.0.time_emb_proj.weight",
                 "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                 "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
                 "mid_block.attentions.0.proj_in.weight", "mid_block.attentions.0.norm.weight"):
        assert must in u, must
    rest = [n for n in names if n.startswith(("time_embedding.", "conv_norm_out.", "conv_out."))]
    assert sorted(u + attn2 + rest) == sorted(names) and len(set(u) & set(attn2)) == 0
    # ESD-u as esd_sd.py selects it: Linear/Conv2d outside attn2 (time embedding and conv_out in, no norms)
    ud = sel["esd-u-diffusers"]
    assert "time_embedding.linear_1.weight" in ud and "conv_out.weight" in ud and "conv_in.bias" in ud
    assert not any(".attn2." in n or "norm" in n.rsplit(".", 2)[-2] for n in ud)
    assert sel["full"] == names
    with pytest.raises(ValueError, match="valid"):
        esd.trainable_parameter_names(pipe.unet, "xattn")
    with pytest.raises(ValueError, match="selects no parameter"):
        esd.trainable_parameter_names(torch.nn.Sequential(torch.nn.Linear(2, 2)), "esd-x")


def test_pool_matches_partial_sampling(pipe):
    prompts, seeds = ["a nude person", "nude"], [11, 12]
    traj = esd.trajectory_pool(pipe, prompts, seeds, steps=50, guidance=3.0)
    assert traj.latents.shape[:2] == (2, 51) and traj.noise_uncond is not None
    c = pipe.encode_prompt(prompts, "cpu", 1, True)
    for k, r in ((0, 0), (0, 17), (1, 49)):
        x, t = latents_at(pipe, [prompts[k]], [seeds[k]], r, steps=50, guidance=3.0)
        assert t == int(traj.timesteps[r])
        assert torch.allclose(traj.latents[k, r], x[0], atol=1e-6)
        with torch.no_grad():  # the recorded predictions are the frozen model's at (x_t, t)
            e = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([c[0][k:k + 1], c[1][k:k + 1]])).sample
        assert torch.allclose(traj.noise_cond[k, r], e[0], atol=1e-5)
        assert torch.allclose(traj.noise_uncond[k, r], e[1], atol=1e-5)


def test_pool_stopped_early_holds_the_full_pools_first_latents(pipe):
    prompts, seeds = ["a nude person", "a person in the sauna", "a red car"], [3, 4, 5]
    full = esd.trajectory_pool(pipe, prompts, seeds, steps=20, guidance=3.0, batch_size=2)
    early = esd.trajectory_pool(pipe, prompts, seeds, steps=20, guidance=3.0, batch_size=2, stop=7)
    assert early.latents.shape[:2] == (3, 8) and len(early.timesteps) == 7
    torch.testing.assert_close(early.latents, full.latents[:, :8], rtol=0, atol=0)
    torch.testing.assert_close(early.timesteps, full.timesteps[:7], rtol=0, atol=0)


@pytest.mark.parametrize("parameter_set", ["esd-x-strict", "esd-u"])
def test_erase_returns_trained_selection_only(pipe, parameter_set):
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    cfg = esd.ESDConfig(parameter_set=parameter_set, iterations=3, pool_size=8, ddim_steps=10)
    log = []
    edit = esd.erase(pipe, "nude", cfg, progress=False, log=log)
    assert list(edit) == esd.trainable_parameter_names(pipe.unet, parameter_set)
    assert len(log) == 3 and all(np.isfinite(e["loss"]) for e in log)
    params = dict(pipe.unet.named_parameters())
    changed = [n for n in edit if not torch.equal(edit[n], params[n].detach())]
    assert len(changed) == len(edit)  # Adam moves every selected tensor on its first step
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())  # pipeline untouched
    again = esd.erase(pipe, "nude", cfg, progress=False)
    assert all(torch.equal(edit[n], again[n]) for n in edit)  # seeded


def test_legacy_options_run(pipe):
    small = dict(iterations=2, pool_size=8, ddim_steps=10)
    for cfg in (esd.ESDConfig(timestep="bin", **small),
                esd.ESDConfig(sample_from="trained", refresh_every=1, **small),
                esd.ESDConfig.fast(**small)):
        edit = esd.erase(pipe, ["nude", "a nude person"], cfg, progress=False)
        assert len(edit) == 35
    with pytest.raises(ValueError, match="parameter_set"):
        esd.ESDConfig(parameter_set="noxattn")
    with pytest.raises(ValueError, match="concept"):
        esd.erase(pipe, "", esd.ESDConfig(iterations=1))


def test_negative_guidance_target_known_values():
    e_c, e_0 = torch.tensor([3.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.5])  # e_c - e_0 = [2, -2, 0]
    target = esd.negative_guidance_target
    # paper / legacy form: e_0 - eta (e_c - e_0)
    assert torch.equal(target(e_c, e_0, 1.0, "uncond_base"), torch.tensor([-1.0, 3.0, 0.5]))
    assert torch.equal(target(e_c, e_0, 2.0, "uncond_base"), torch.tensor([-3.0, 5.0, 0.5]))
    assert torch.equal(target(e_c, e_0, 0.5, "uncond_base"), torch.tensor([0.0, 2.0, 0.5]))
    assert torch.equal(target(e_c, e_0, 0.0, "uncond_base"), e_0)
    # esd_sd.py's form: e_c - eta (e_c - e_0); its eta 2 is the paper's eta 1, its eta 1 gives e_0 itself
    assert torch.equal(target(e_c, e_0, 2.0, "cond_base"), torch.tensor([-1.0, 3.0, 0.5]))
    assert torch.equal(target(e_c, e_0, 1.0, "cond_base"), e_0)
    assert torch.equal(target(e_c, e_0, 0.0, "cond_base"), e_c)
    assert torch.equal(target(e_c, e_0, 3.0, "cond_base"), torch.tensor([-3.0, 5.0, 0.5]))
    with pytest.raises(ValueError, match="eta form"):
        target(e_c, e_0, 1.0, "diffusers")


def test_cond_base_eta_2_edit_equals_uncond_base_eta_1_edit(pipe):
    """The two conventions give the same target, so the same training run (same seed) gives the same edit; the
    paper form at eta 2 (what a mixed-up convention would train) does not."""
    small = dict(parameter_set="esd-x", iterations=3, pool_size=4, ddim_steps=10, lr=1e-3, seed=0)
    paper = esd.erase(pipe, "nude", esd.ESDConfig(eta_form="uncond_base", negative_guidance=1.0, **small),
                      progress=False)
    diffusers = esd.erase(pipe, "nude", esd.ESDConfig(eta_form="cond_base", negative_guidance=2.0, **small),
                          progress=False)
    stronger = esd.erase(pipe, "nude", esd.ESDConfig(eta_form="uncond_base", negative_guidance=2.0, **small),
                         progress=False)
    assert list(paper) == list(diffusers) == list(stronger)
    diff = max(float((paper[n] - diffusers[n]).abs().max()) for n in paper)
    other = max(float((paper[n] - stronger[n]).abs().max()) for n in paper)
    assert diff < 2e-5 and other > 5e-4, (diff, other)


def test_bin_timesteps_lie_in_the_bin_of_their_ddim_index(pipe):
    steps, T = 10, pipe.scheduler.config.num_train_timesteps
    width = T // steps
    small = dict(iterations=4, batch_size=4, pool_size=4, ddim_steps=steps)
    log = []
    esd.erase(pipe, "nude", esd.ESDConfig(timestep="bin", **small), progress=False, log=log)
    pairs = [(t, r) for e in log for t, r in zip(e["t"], e["index"], strict=True)]
    assert len(pairs) == 16 and len({r for _, r in pairs}) > 1
    for t, r in pairs:  # index r's bin: [T - width (r + 1), T - width r)
        assert T - width * (r + 1) <= t < T - width * r, (t, r)
    grid = [int(t) for t in set_steps(pipe, steps)]
    assert grid == [T - width * (r + 1) + 1 for r in range(steps)]  # 901, 801, ..., 1 (steps_offset 1)
    assert sum(t in grid for t, _ in pairs) < len(pairs) / 2  # drawn in the bin, not at the grid point
    assert len({t - (T - width * (r + 1)) for t, r in pairs}) > 8  # and not at one fixed point of the bin
    # "grid": exactly the DDIM timestep of the index
    log = []
    esd.erase(pipe, "nude", esd.ESDConfig(timestep="grid", **small), progress=False, log=log)
    assert all(t == grid[r] for e in log for t, r in zip(e["t"], e["index"], strict=True))


def test_sample_from_chooses_the_unet_that_samples_the_pool(pipe, monkeypatch):
    """``sample_from="trained"`` samples every (re)fresh of the pool with the model being trained (``pipe.unet``
    with the trained tensors swapped in: no copy), so from the second refresh on its x_t differ from the frozen
    model's; ``"frozen"`` samples once, with the frozen model."""
    original, calls = esd.trajectory_pool, []
    names = esd.trainable_parameter_names(pipe.unet, "esd-x")

    def recording(pipe_, prompts, seeds, *args, unet=None, **kwargs):
        params = dict(pipe_.unet.named_parameters())
        calls.append({"unet": unet, "sampler": pipe_.unet, "values": {n: params[n].detach().clone() for n in names},
                      "args": (prompts, seeds, *args), "kwargs": kwargs})
        calls[-1]["traj"] = original(pipe_, prompts, seeds, *args, unet=unet, **kwargs)
        return calls[-1]["traj"]

    monkeypatch.setattr(esd, "trajectory_pool", recording)
    frozen = pipe.unet
    before = {n: p.detach().clone() for n, p in frozen.named_parameters() if n in names}
    small = dict(parameter_set="esd-x", iterations=3, pool_size=4, ddim_steps=10, lr=1e-3, refresh_every=1)
    edit = esd.erase(pipe, "nude", esd.ESDConfig(sample_from="trained", **small), progress=False)
    assert pipe.unet is frozen and all(torch.equal(p.detach(), before[n]) for n, p in frozen.named_parameters()
                                       if n in names)
    assert len(calls) == 3  # a fresh pool every iteration, each sampled by pipe.unet itself (no copy)
    assert all(c["unet"] is None and c["sampler"] is frozen for c in calls)
    # iteration 0 samples with the untrained values; later refreshes with the values after 1 and 2 steps
    assert all(torch.equal(calls[0]["values"][n], before[n]) for n in names)
    assert all(not torch.equal(c["values"][n], before[n]) for c in calls[1:] for n in names)
    assert all(not torch.equal(calls[2]["values"][n], edit[n]) for n in names)  # the edit is one step further
    for k, c in enumerate(calls):  # x_t: the frozen model's at the first refresh, then not
        by_frozen = original(pipe, *c["args"], **c["kwargs"])
        moved = float((c["traj"].latents - by_frozen.latents).abs().max())
        assert (moved < 1e-6) if k == 0 else (moved > 1e-4), (k, moved)
    calls.clear()
    esd.erase(pipe, "nude", esd.ESDConfig(sample_from="frozen", **small), progress=False)
    assert len(calls) == 1 and all(torch.equal(calls[0]["values"][n], before[n]) for n in names)  # once, frozen


# --- issue 10: memory -------------------------------------------------------------------------------------------
# Fingerprints (erasure_lib.methods.cache.edit_fingerprint) of toy edits made by the implementation *before*
# issue 10 (the committed HEAD ac5c352: a deep copy of the UNet trained in fp32), computed by running that code
# (git archive HEAD, on CPU, one thread) with exactly these configurations, concept "a nude person". The training
# code of issue 10 (trained tensors swapped into pipe.unet, no copies) must reproduce them bit for bit.
# CPUs differ in their floating-point kernels: the same old code gives other bits on another machine of this kind
# (an AMD EPYC with AVX-512, 2026-12-04), so each machine the old code ran on contributes its fingerprint, and the
# implementation must reproduce the old code's bits as one of them computed them.
SMALL = dict(pool_size=2, ddim_steps=10)
BEFORE_ISSUE_10 = {
    "esd-x": (dict(parameter_set="esd-x", iterations=4),
              {"43bd31f43d36fe1b193d22b8b99ff27695d2650478799f0a9e6db34573331bb4",
               "08ad82c0bece81fa45f5043004007911a45ec720e410c7f6b0cdd3d7f9ada4c7"}),
    "esd-u": (dict(parameter_set="esd-u", iterations=4),
              {"9fbd65c4bbfd7930884a4f57f4a0dc9cf40712efc9fbb11cb36904744463949e",
               "a0023a0f03ae2fc9f41de9aca6d151419042e898479cb58a748f15d076b05d9c"}),
    "esd-u-bin-trained": (dict(parameter_set="esd-u", iterations=4, timestep="bin", sample_from="trained",
                               refresh_every=2),
                          {"767f115fd712b68c6fa56132bb1fbe3ed2899bc1efe630249fbb78af826cf054",
                           "40fcb7e36cac42864e0de9f8db9ad3462b5187e11008d87505b0d4abbeab58ec"}),
}


@pytest.mark.parametrize("case", list(BEFORE_ISSUE_10))
def test_toy_edits_are_bit_identical_to_the_implementation_before_issue_10(pipe, case):
    from erasure_lib.methods.cache import edit_fingerprint
    overrides, fingerprint = BEFORE_ISSUE_10[case]
    before = edit_fingerprint(dict(pipe.unet.state_dict()))
    edit = esd.erase(pipe, "a nude person", esd.ESDConfig(**overrides, **SMALL), progress=False)
    assert edit_fingerprint(edit) in fingerprint
    assert edit_fingerprint(dict(pipe.unet.state_dict())) == before  # and the pipeline is as it was


def test_gradient_checkpointing_gives_the_same_losses_and_edit(pipe):
    cfg = dict(parameter_set="esd-u", iterations=3, **SMALL)
    logs = {}
    edits = {}
    for on in (False, True):
        logs[on] = []
        edits[on] = esd.erase(pipe, "a nude person", esd.ESDConfig(gradient_checkpointing=on, **cfg),
                              progress=False, log=logs[on])
    assert not pipe.unet.is_gradient_checkpointing  # switched off again
    losses = {on: np.array([e["loss"] for e in log]) for on, log in logs.items()}
    assert len(losses[True]) == 3 and np.abs(losses[True] - losses[False]).max() <= 1e-6, losses
    assert max(float((edits[True][n] - edits[False][n]).abs().max()) for n in edits[True]) <= 1e-6


def test_frozen_teacher_is_the_untrained_model_throughout_training(pipe, monkeypatch):
    """The frozen model is ``pipe.unet`` with its own tensors swapped back in: every time training calls it
    (the pool, then every iteration with timestep="bin") it gives the untrained pipeline's output on a fixed
    input, bit for bit, and so does ``pipe.unet`` after training."""
    from contextlib import contextmanager

    from erasure_lib.loading import load_pipeline
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    c = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([901, 301])
    untrained = load_pipeline("toy", device="cpu").unet  # an independent copy of the base model
    with torch.no_grad():
        reference = untrained(x, t, encoder_hidden_states=c).sample
    seen, original = [], esd.TrainedTensors.frozen

    @contextmanager
    def watched(self):
        with original(self):
            with torch.no_grad():
                seen.append(self.unet(x, t, encoder_hidden_states=c).sample)
            yield

    monkeypatch.setattr(esd.TrainedTensors, "frozen", watched)
    cfg = esd.ESDConfig(parameter_set="esd-u", iterations=3, timestep="bin", lr=1e-3, **SMALL)
    edit = esd.erase(pipe, "a nude person", cfg, progress=False)
    assert len(seen) == 1 + 3 and all(torch.equal(s, reference) for s in seen)
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, t, encoder_hidden_states=c).sample, reference)
        with edited(pipe, edit):  # while the trained model is not the frozen one
            assert (pipe.unet(x, t, encoder_hidden_states=c).sample - reference).abs().max() > 1e-4


def test_trained_tensors_swap_without_copying_and_restore_everything(pipe):
    unet = pipe.unet
    names = esd.trainable_parameter_names(unet, "esd-x")
    params = dict(unet.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    with esd.TrainedTensors(unet, names) as trained:
        inside = dict(unet.named_parameters())
        assert all(inside[n] is m and m.dtype == torch.float32 and m.requires_grad
                   for n, m in zip(names, trained.masters, strict=True))
        assert all(inside[n] is params[n] and not params[n].requires_grad for n in params if n not in names)
        assert all(m.data_ptr() != params[n].data_ptr() for n, m in zip(names, trained.masters, strict=True))
        with torch.no_grad():
            trained.masters[0].add_(1.0)
        with trained.frozen():
            assert all(dict(unet.named_parameters())[n] is params[n] for n in names)
        with trained.sampling():  # fp32 base: the masters themselves, no copy
            assert all(dict(unet.named_parameters())[n] is m for n, m in zip(names, trained.masters, strict=True))
        assert torch.equal(trained.values()[names[0]], params[names[0]].detach() + 1.0)
    after = dict(unet.named_parameters())
    assert all(after[n] is params[n] for n in params)  # the same Parameter objects, untouched values
    assert {n: p.requires_grad for n, p in after.items()} == flags


def test_an_error_during_training_leaves_the_pipeline_as_it_was(pipe, monkeypatch):
    from erasure_lib.methods.cache import edit_fingerprint
    before = edit_fingerprint(dict(pipe.unet.state_dict()))
    params = dict(pipe.unet.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    original = esd.optimisation_step

    def failing(optimizer, loss, iteration, *args, **kwargs):
        if iteration == 1:
            raise FloatingPointError("injected")
        return original(optimizer, loss, iteration, *args, **kwargs)

    monkeypatch.setattr(esd, "optimisation_step", failing)
    with pytest.raises(FloatingPointError, match="injected"):
        esd.erase(pipe, "nude", esd.ESDConfig(parameter_set="esd-u", iterations=3, gradient_checkpointing=True,
                                              **SMALL), progress=False)
    assert edit_fingerprint(dict(pipe.unet.state_dict())) == before
    assert all(p is params[n] for n, p in pipe.unet.named_parameters())
    assert {n: p.requires_grad for n, p in pipe.unet.named_parameters()} == flags
    assert not pipe.unet.is_gradient_checkpointing and not pipe.unet.training


def test_optimizers(pipe):
    cfg = dict(parameter_set="esd-x", iterations=2, **SMALL)
    ada = esd.erase(pipe, "nude", esd.ESDConfig(optimizer="adafactor", **cfg), progress=False)
    adam = esd.erase(pipe, "nude", esd.ESDConfig(**cfg), progress=False)
    params = dict(pipe.unet.named_parameters())
    assert set(ada) == set(adam) and all(not torch.equal(ada[n], params[n].detach()) for n in ada)
    assert any(not torch.equal(ada[n], adam[n]) for n in ada)
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert type(esd.make_optimizer("adafactor", p, 1e-5)).__name__ == "Adafactor"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="bitsandbytes"):
            esd.make_optimizer("adam8bit", p, 1e-5)
    with pytest.raises(ValueError, match="optimizer"):
        esd.ESDConfig(optimizer="sgd")
    sd14 = esd.ESDConfig.sd14()
    assert sd14.gradient_checkpointing and not esd.ESDConfig().gradient_checkpointing


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_base_trains_under_autocast_with_fp32_masters(dtype):
    """A reduced-precision base (SD v1.4 is fp16 on CUDA; here the toy on the CPU) trains the fp32 masters under
    autocast: finite losses, an fp32 edit that moved, and the pipeline back as it was (dtype and values)."""
    from erasure_lib.loading import load_pipeline
    from erasure_lib.methods.cache import edit_fingerprint
    low = load_pipeline("toy", device="cpu", dtype=dtype)
    before = edit_fingerprint(dict(low.unet.state_dict()))
    log = []
    edit = esd.erase(low, "a nude person", esd.ESDConfig.sd14("esd-u", iterations=2, refresh_every=1, **SMALL),
                     progress=False, log=log)
    assert len(log) == 2 and all(np.isfinite(e["loss"]) for e in log)
    assert {v.dtype for v in edit.values()} == {torch.float32}
    params = dict(low.unet.named_parameters())
    assert all(params[n].dtype == dtype for n in edit)
    assert sum(not torch.equal(edit[n].to(dtype), params[n].detach()) for n in edit) > len(edit) / 2
    assert edit_fingerprint(dict(low.unet.state_dict())) == before and low.unet.dtype == dtype


def test_ci_sized_esd_erases_nudity_and_keeps_objects(pipe, rates):
    from erasure_lib.toyworld.zoo import load_classifier
    clf = load_classifier()
    nude0, obj0 = rates(pipe, clf)
    assert nude0 >= 0.9 and obj0 >= 0.9
    edit = esd.erase(pipe, CI_CONCEPT, CI_CONFIG, progress=False)
    with edited(pipe, edit):
        nude1, obj1 = rates(pipe, clf)
    assert nude1 <= ERASE_MAX, (nude0, nude1)
    assert obj1 >= obj0 - KEEP_TOLERANCE, (obj0, obj1)


@pytest.mark.xfail(strict=True, reason="toy-world limitation (issue 9, chapter 00 'What the toy world reproduces'): "
                   "ESD-u moves eps(x, '') with eps(x, c), so classifier-free guidance at the evaluation guidance "
                   "brings the concept back. Strict: once a zoo fixes it, this passes and the mark must go.")
def test_esd_u_erases_nudity_at_the_evaluation_guidance(pipe, rates):
    """The paper's ESD-u, at the toy defaults (ESDConfig(parameter_set="esd-u"): lr esd.TOY_LR["esd-u"], 1000
    iterations), on SD v1.4 takes nudity to about 20%; on the toy it must at least halve the explicit rate at the
    evaluation guidance while objects stay within KEEP_TOLERANCE."""
    from erasure_lib.prompts import TOY_GUIDANCE
    from erasure_lib.toyworld.zoo import load_classifier
    clf = load_classifier()
    nude0, obj0 = rates(pipe, clf, guidance=TOY_GUIDANCE)
    edit = esd.erase(pipe, CI_CONCEPT, esd.ESDConfig(parameter_set="esd-u"), progress=False)
    with edited(pipe, edit):
        nude1, obj1 = rates(pipe, clf, guidance=TOY_GUIDANCE)
    assert obj1 >= obj0 - KEEP_TOLERANCE, (obj0, obj1)
    assert nude1 <= 0.5 * nude0, (nude0, nude1)
