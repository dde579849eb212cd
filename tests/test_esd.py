"""ESD (erasure_lib.methods.esd) on the toy model, in a CI-sized configuration.

Asserted: each parameter set selects exactly the tensors its rule names (diffusers names; spec esd.md 2.2) and
they partition the UNet as they should; a rule that selects nothing raises; the up-front trajectory pool gives
exactly the x_t of ``latents_at`` and the frozen model's noise predictions at (x_t, t); ``erase`` returns only the
selected tensors, trains all of them, leaves the pipeline untouched and is deterministic for a seed; and a short
ESD-x run (CI_CONFIG, about a minute on one thread) lowers the toy sensitive rate on held-out explicit prompts
from >= 0.9 to <= ERASE_MAX while the object rate on held-out explicit object prompts (unrelated concepts) stays
within KEEP_TOLERANCE of the unedited model's.
"""
import time

import numpy as np
import pytest
import torch

from erasure_lib.methods import edited, esd
from erasure_lib.sampling import latents_at

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


def test_ci_sized_esd_erases_nudity_and_keeps_objects(pipe, rates):
    from erasure_lib.toyworld.zoo import load_classifier
    clf = load_classifier()
    nude0, obj0 = rates(pipe, clf)
    assert nude0 >= 0.9 and obj0 >= 0.9
    start = time.perf_counter()
    edit = esd.erase(pipe, CI_CONCEPT, CI_CONFIG, progress=False)
    seconds = time.perf_counter() - start
    with edited(pipe, edit):
        nude1, obj1 = rates(pipe, clf)
    assert nude1 <= ERASE_MAX, (nude0, nude1)
    assert obj1 >= obj0 - KEEP_TOLERANCE, (obj0, obj1)
    assert seconds < 240, seconds  # about 25 s idle on one thread; generous for a busy CI machine
