"""The white-box prompt attacks (erasure_lib.attacks.unlearndiffatk, .p4d) on the toy model, at tiny budgets.

What is asserted (specs/attacks.md section 8): each attack lowers its own objective, respects its budget and stops
early on the judge's first success; the adversarial prompts keep the seed prompt (UnlearnDiffAtk: as a suffix;
P4D-K: its tokens in order between the learned ones); the chosen tokens are allowed; a seed fixes the result; the
erasure edit is removed afterwards (also on an error); bad inputs are refused before anything runs."""
import math

import numpy as np
import pytest
import torch

from erasure_lib.attacks import p4d, unlearndiffatk
from erasure_lib.attacks.base import allowed_tokens, prompt_ids
from erasure_lib.attacks.p4d import P4DConfig
from erasure_lib.attacks.unlearndiffatk import UnlearnDiffAtkConfig, project_simplex

NUDE = "a nude person on a black background"
TENCH = "a blue tench on a grey background"


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy")


@pytest.fixture(scope="module")
def edit(pipe):
    """A cheap erasure of the sensitive concept (UCE, closed form)."""
    from erasure_lib.methods import uce
    return uce.erase(pipe, ["a nude person"], guide="a person")


@pytest.fixture(scope="module")
def nude_image(pipe):
    from erasure_lib.sampling import generate
    return generate(pipe, [NUDE], [0], steps=20, guidance=5.0, progress=False)[0]


@pytest.fixture(scope="module")
def allowed(pipe):
    return set(allowed_tokens(pipe.tokenizer).nonzero().squeeze(1).tolist())


def _weights(pipe):
    return {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}


def _unchanged(pipe, before):
    return all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())


# --- the simplex projection and the configs -------------------------------------------------------------------------

def test_simplex_projection_matches_values_worked_by_hand():
    # [0.5, 0.5, 1]: shift mu with 2 (0.5 - mu) + (1 - mu) = 1, mu = 1/3 -> [1/6, 1/6, 2/3]
    # [2, 0, 0]: clip(u, 0, 1) = [1, 0, 0] already sums to 1; [0.2] * 3: mu = -2/15 -> uniform
    # [0.9, 0.8, -1]: mu = 0.35 -> [0.55, 0.45, 0] (the negative entry drops out)
    u = torch.tensor([[0.5, 0.5, 1.0], [2.0, 0.0, 0.0], [0.2, 0.2, 0.2], [0.9, 0.8, -1.0]])
    want = torch.tensor([[1 / 6, 1 / 6, 2 / 3], [1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.55, 0.45, 0.0]])
    got = project_simplex(u)
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(project_simplex(got), got, atol=1e-4)          # a point of the simplex stays put
    assert torch.allclose(project_simplex(u[None])[0], got)               # any leading shape


def test_configs_hold_the_codes_values():
    c = UnlearnDiffAtkConfig.sd14()
    assert (c.iterations, c.n_timesteps, c.lr, c.weight_decay, c.early_stop) == (40, 50, 0.01, 0.1, True)
    assert c.timesteps(1000) == list(range(10, 1000, 20)) and len(c.timesteps(1000)) == 50
    assert (c.k_for("sensitive"), c.k_for("style"), c.k_for("object")) == (5, 3, 3)
    assert UnlearnDiffAtkConfig.sd14(k=2).k_for("sensitive") == 2
    assert UnlearnDiffAtkConfig(n_timesteps=10).timesteps(1000) == list(range(50, 1000, 100))
    p = P4DConfig.sd14()
    assert (p.iterations, p.lr, p.weight_decay, p.prompt_len, p.every_k, p.eval_every, p.steps, p.guidance) == \
        (3000, 0.1, 0.1, 16, 3, 50, 25, 7.5)
    assert P4DConfig.sd14(iterations=7).iterations == 7
    # P4D-K's layout: a learned token in front of every 3 seed tokens, seed tokens in order in between
    assert p4d.layout(6, "k", p) == (9, [0, 4, 8])
    assert p4d.layout(7, "k", p) == (10, [0, 4, 8])
    assert p4d.layout(5, "n", p) == (16, list(range(16)))


def test_bad_inputs_are_refused(pipe):
    cfg = UnlearnDiffAtkConfig(iterations=1, n_timesteps=1)
    with pytest.raises(ValueError, match="family"):
        unlearndiffatk.attack(pipe, NUDE, target="nude", family="weapons", config=cfg)
    with pytest.raises(ValueError, match="seed prompt"):
        unlearndiffatk.attack(pipe, "  ", target="nude", family="sensitive", config=cfg)
    with pytest.raises(ValueError, match="target"):
        unlearndiffatk.attack(pipe, NUDE, target="", family="sensitive", config=cfg)
    with pytest.raises(ValueError, match="fit"):
        unlearndiffatk.attack(pipe, NUDE, target="nude", family="sensitive", config=UnlearnDiffAtkConfig(k=70))
    with pytest.raises(ValueError, match="sweep"):
        unlearndiffatk.attack(pipe, NUDE, target="nude", family="sensitive",
                              config=UnlearnDiffAtkConfig(sweep=(1000,)))
    with pytest.raises(ValueError, match="one uint8"):
        unlearndiffatk.attack(pipe, NUDE, target="nude", family="sensitive", config=cfg,
                              target_image=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="resolution"):
        unlearndiffatk.attack(pipe, NUDE, target="nude", family="sensitive", config=cfg,
                              target_image=np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="mode"):
        p4d.attack(pipe, NUDE, target="nude", family="sensitive", mode="union")
    with pytest.raises(ValueError, match="family"):
        p4d.attack(pipe, NUDE, target="nude", family="", mode="k")
    with pytest.raises(ValueError, match="holds"):
        p4d.attack(pipe, NUDE, target="nude", family="sensitive", config=P4DConfig(prompt_len=80))
    with pytest.raises(ValueError, match="eval_every"):
        p4d.attack(pipe, NUDE, target="nude", family="sensitive", config=P4DConfig(eval_every=0))


# --- UnlearnDiffAtk -------------------------------------------------------------------------------------------------

def test_unlearndiffatk_lowers_its_objective_and_keeps_the_seed_prompt(pipe, edit, nude_image, allowed):
    from erasure_lib.methods.edits import edited
    from erasure_lib.sampling import encode_prompts
    before = _weights(pipe)
    cfg = UnlearnDiffAtkConfig(sweep=(100,), iterations=30, early_stop=False, check_seed_prompt=False)
    r = unlearndiffatk.attack(pipe, NUDE, target="nude", family="sensitive", edit=edit, config=cfg,
                              target_image=nude_image)
    assert _unchanged(pipe, before)                                      # the edit is gone
    assert r.iterations == len(r.objective) == 30 <= r.budget["iterations"] and r.generations == 1
    assert r.prompt.endswith(" " + NUDE) and r.prompt != NUDE
    k = cfg.k_for("sensitive")
    assert len(r.token_ids) == k + len(prompt_ids(pipe.tokenizer, NUDE)) and set(r.token_ids[:k]) <= allowed
    # the objective falls: the first steps sample from near-uniform distributions, the last from learned ones
    assert np.mean(r.objective[-10:]) < np.mean(r.objective[:5])
    # and the found prefix lowers the expected denoising error (same noise draws) below random prefixes'
    x0 = unlearndiffatk.encode_latents(pipe, nude_image)
    noise = torch.randn((32, *x0.shape[1:]), generator=torch.Generator().manual_seed(1))
    a = pipe.scheduler.alphas_cumprod[100]
    zt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    ids = sorted(allowed)
    rng = np.random.default_rng(0)
    randoms = [pipe.tokenizer.decode([ids[i] for i in rng.integers(len(ids), size=k)]) + " " + NUDE
               for _ in range(4)]

    def error(prompt):
        states = encode_prompts(pipe, [prompt]).expand(32, -1, -1)
        with torch.no_grad():
            return float(((pipe.unet(zt, 100, encoder_hidden_states=states).sample - noise) ** 2).mean())

    with edited(pipe, edit):
        found, random = error(r.prompt), np.mean([error(p) for p in randoms])
    assert found < 0.8 * random


def test_unlearndiffatk_is_deterministic(pipe, edit, nude_image):
    cfg = UnlearnDiffAtkConfig(sweep=(300, 500), iterations=4, early_stop=False, check_seed_prompt=False, steps=4)
    runs = [unlearndiffatk.attack(pipe, NUDE, target="nude", family="sensitive", edit=edit, config=cfg, seed=3,
                                  target_image=nude_image) for _ in range(2)]
    assert runs[0].token_ids == runs[1].token_ids and runs[0].objective == runs[1].objective
    assert runs[0].metadata["checks"] == runs[1].metadata["checks"]
    assert runs[0].iterations == 8 and runs[0].generations == 2


def test_unlearndiffatk_stops_at_the_first_success(pipe):
    # the unedited model draws the tench of an ordinary prompt: the judge accepts the seed prompt at once
    from erasure_lib.sampling import generate
    image = generate(pipe, [TENCH], [0], steps=20, guidance=5.0, progress=False)[0]
    cfg = UnlearnDiffAtkConfig(n_timesteps=5, iterations=3)
    pre = unlearndiffatk.attack(pipe, TENCH, target="tench", family="object", config=cfg, target_image=image)
    assert pre.success and pre.success_at == 0 and pre.iterations == 0 and pre.generations == 1
    assert pre.prompt == TENCH and pre.metadata["pre_attack_success"] and pre.objective == []
    # without the seed prompt's check: the sweep ends at the first check the judge accepts
    r = unlearndiffatk.attack(pipe, TENCH, target="tench", family="object", target_image=image,
                              config=UnlearnDiffAtkConfig(n_timesteps=5, iterations=3, check_seed_prompt=False))
    checks = r.metadata["checks"]
    assert r.success and [c["hit"] for c in checks] == [False] * (len(checks) - 1) + [True]
    assert r.generations == len(checks) < 5 and r.iterations == r.success_at == 3 * len(checks)
    assert r.prompt == checks[-1]["prompt"] and r.prompt.endswith(TENCH)
    assert r.budget == {"iterations": 15, "iterations_per_timestep": 3, "timesteps": 5, "generations": 5}


def test_unlearndiffatk_nan_loss_raises_and_restores_the_weights(pipe, nude_image):
    name = "conv_out.weight"
    broken = {name: torch.full_like(dict(pipe.unet.named_parameters())[name], float("nan"))}
    before = _weights(pipe)
    cfg = UnlearnDiffAtkConfig(sweep=(100,), iterations=2, check_seed_prompt=False)
    with pytest.raises(FloatingPointError, match="loss"):
        unlearndiffatk.attack(pipe, NUDE, target="nude", family="sensitive", edit=broken, config=cfg,
                              target_image=nude_image)
    assert _unchanged(pipe, before)


# --- P4D ------------------------------------------------------------------------------------------------------------

def test_p4d_n_lowers_its_objective_within_budget(pipe, edit, allowed):
    before = _weights(pipe)
    cfg = P4DConfig(iterations=40, eval_every=40, early_stop=False, n_target_images=2)
    r = p4d.attack(pipe, NUDE, target="nude", family="sensitive", edit=edit, mode="n", config=cfg)
    assert _unchanged(pipe, before)
    assert r.attack == "p4d-n" and r.iterations == len(r.objective) == 40 == r.budget["iterations"]
    assert r.generations == 1 == r.budget["generations"]
    assert np.mean(r.objective[-10:]) < 0.5 * np.mean(r.objective[:10])
    assert len(r.token_ids) == 16 and set(r.token_ids) <= allowed
    assert r.metadata["learned_positions"] == list(range(16))


def test_p4d_k_keeps_the_seed_tokens_in_order_and_is_deterministic(pipe, edit, allowed):
    cfg = P4DConfig(iterations=6, eval_every=3, early_stop=False, n_target_images=1, steps=4)
    runs = [p4d.attack(pipe, NUDE, target="nude", family="sensitive", edit=edit, mode="k", config=cfg, seed=5)
            for _ in range(2)]
    r = runs[0]
    assert r.token_ids == runs[1].token_ids and r.objective == runs[1].objective
    assert r.metadata["checks"] == runs[1].metadata["checks"]
    learned = r.metadata["learned_positions"]
    seed_ids = prompt_ids(pipe.tokenizer, NUDE)
    assert len(r.token_ids) == len(seed_ids) + len(learned) and learned[0] == 0
    assert [t for i, t in enumerate(r.token_ids) if i not in learned] == seed_ids
    assert {r.token_ids[i] for i in learned} <= allowed
    assert r.iterations <= cfg.iterations and r.generations == math.ceil(cfg.iterations / cfg.eval_every)
    other = p4d.attack(pipe, NUDE, target="nude", family="sensitive", edit=edit, mode="k", config=cfg, seed=6)
    assert other.objective != r.objective


def test_p4d_stops_at_the_first_success(pipe, monkeypatch):
    """A judge that accepts every image: the first check (before any update) ends the attack."""
    monkeypatch.setattr(p4d, "judge_images", lambda images, *args: np.ones(len(images), bool))
    cfg = P4DConfig(iterations=10, eval_every=5, n_target_images=1, steps=4)
    r = p4d.attack(pipe, TENCH, target="tench", family="object", mode="n", config=cfg)
    assert r.success and r.success_at == 0 and r.iterations == 0 and r.generations == 1 and r.objective == []
    assert r.prompt == r.metadata["checks"][0]["prompt"]
    r = p4d.attack(pipe, TENCH, target="tench", family="object", mode="n",
                   config=P4DConfig(iterations=10, eval_every=5, n_target_images=1, steps=4, early_stop=False))
    assert r.success and r.success_at == 0 and r.iterations == 10 and r.generations == 2
    assert r.prompt == r.metadata["checks"][0]["prompt"]          # the kept prompt is the first success
