"""TICoE (erasure_lib.methods.ticoe) and its toy prompt banks (erasure_lib.toyworld.banks)."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from erasure_lib.methods import edited, esd, ticoe
from erasure_lib.toyworld import banks
from erasure_lib.toyworld.captions import heldout_prompt_strings


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib import load_pipeline
    return load_pipeline("toy", device="cpu")


# --- the banks ------------------------------------------------------------------------------------------------

def test_committed_toy_banks_are_the_builders_and_avoid_held_out_prompts():
    for concept in banks.BANK_CONCEPTS:
        data = json.loads(banks.bank_path(concept).read_text())
        assert data == {"concept": concept, "prompts": banks.toy_bank(concept)}
        prompts = data["prompts"]
        assert len(prompts) == 30 and len(set(prompts)) == 30
        assert not set(prompts) & heldout_prompt_strings()
        assert ticoe.load_bank(concept, "toy") == prompts
    assert "tench" in ticoe.load_bank("tench") and "vincent vael" in ticoe.load_bank("starry style")


def test_bank_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no toy prompt bank"):
        ticoe.load_bank("camera", "toy")
    with pytest.raises(ValueError, match="unknown profile"):
        ticoe.load_bank("tench", "sd15")
    with pytest.raises(ValueError, match="no released TICoE prompt bank"):
        ticoe.load_bank("starry style", "sd14")
    with pytest.raises(FileNotFoundError):
        ticoe.read_bank(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"concept": "x", "prompts": ["a", " "]}))
    with pytest.raises(ValueError, match="not a prompt bank"):
        ticoe.read_bank(tmp_path / "bad.json")
    # sd14, offline: a folder of bank files in the code's format
    (tmp_path / "tench.json").write_text(json.dumps({"concept": "tench", "prompts": ["tench", " Tinca tinca "]}))
    monkeypatch.setenv("ERASURE_BOOK_TICOE_BANKS", str(tmp_path))
    assert ticoe.load_bank("tench", "sd14") == ["tench", "Tinca tinca"]


def test_sd14_bank_download_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("ERASURE_BOOK_TICOE_BANKS", raising=False)
    with pytest.raises(FileNotFoundError, match="download=False"):
        ticoe.load_bank("tench", "sd14", cache_dir=tmp_path, download=False)


def test_bank_hash_is_order_sensitive_and_recorded():
    a = ticoe.bank_hash(["tench", "a tench"])
    assert a != ticoe.bank_hash(["a tench", "tench"]) and len(a) == 16
    meta = ticoe.metadata("tench", ticoe.TICoEConfig(bank_size=10), ticoe.load_bank("tench"))
    assert meta["bank"] == ticoe.load_bank("tench")[:10] and meta["bank_sha256"] == ticoe.bank_hash(meta["bank"])
    assert meta["variant"] == "bank10" and meta["hyperparameters"]["lr"] == 1e-5


# --- CCCM -----------------------------------------------------------------------------------------------------

def test_dirichlet_weights_are_seeded_and_have_the_dirichlet_mean():
    w = ticoe.dirichlet_weights(30, 0.7, np.random.default_rng(3))
    assert torch.equal(w, ticoe.dirichlet_weights(30, 0.7, np.random.default_rng(3)))
    assert (w >= 0).all() and math.isclose(float(w.sum()), 1.0, rel_tol=1e-5)
    rng = np.random.default_rng(0)
    draws = torch.stack([ticoe.dirichlet_weights(5, 0.7, rng) for _ in range(4000)])
    assert torch.allclose(draws.mean(0), torch.full((5,), 0.2), atol=0.01)   # E[w_i] = alpha_i / sum(alpha) = 1/N
    # Var[w_i] = a_i (a0 - a_i) / (a0^2 (a0 + 1)) with a_i = 1/0.7, a0 = 5/0.7
    a, a0 = 1 / 0.7, 5 / 0.7
    assert abs(float(draws[:, 0].var()) - a * (a0 - a) / (a0**2 * (a0 + 1))) < 0.003


def test_the_mixture_lies_in_the_banks_convex_hull(pipe):
    bank = ticoe.encode_bank(pipe, ticoe.load_bank("tench"))
    assert bank.shape == (30, 77, pipe.text_encoder.config.hidden_size)
    # every token state LayerNorm'd: zero mean and unit variance over its channels
    assert torch.allclose(bank.mean(-1), torch.zeros(30, 77), atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        mixed = ticoe.mix_bank(bank, ticoe.dirichlet_weights(30, 0.7, rng), layernorm=False)[0]
        # a convex combination lies, coordinate by coordinate, between the bank's smallest and largest values
        assert (mixed >= bank.min(0).values - 1e-5).all() and (mixed <= bank.max(0).values + 1e-5).all()
    # and a combination with a negative weight leaves the box somewhere
    w = torch.zeros(30)
    w[0], w[1] = 2.0, -1.0
    outside = ticoe.mix_bank(bank, w, layernorm=False)[0]
    assert ((outside < bank.min(0).values - 1e-5) | (outside > bank.max(0).values + 1e-5)).any()


def test_cccm_resamples_on_schedule():
    bank = torch.randn(4, 77, 8)
    cccm = ticoe.CCCM(bank, ticoe.TICoEConfig(resample_every=200), np.random.default_rng(0),
                      torch.Generator().manual_seed(0))
    conds = [cccm.condition(it) for it in range(500)]
    assert cccm.draws == 3                             # iterations 0, 200 and 400: the code's 3 mixtures
    assert all(c is conds[0] for c in conds[:200]) and conds[200] is not conds[199]
    assert not torch.equal(conds[0], conds[200]) and all(c is conds[400] for c in conds[400:])


def test_erase_draws_a_fresh_mixture_every_resample_interval(pipe):
    log = []
    images = np.zeros((2, 32, 32, 3), np.uint8)
    ticoe.erase(pipe, "tench", ticoe.TICoEConfig(iterations=5, resample_every=2), bank=["tench", "a tench"],
                images=images, progress=False, log=log)
    assert [r["draw"] for r in log] == [1, 1, 2, 2, 3]
    assert all(r["image"] in (0, 1) and 0 <= r["t"] < 1000 for r in log)


# --- HVRL -----------------------------------------------------------------------------------------------------

def test_hvrl_tokens_as_the_code_counts_them():
    hvrl = ticoe.HVRL()
    assert hvrl.tokens(torch.zeros(1, 4, 64, 64)).shape == (1, 4096 + 2304 + 1024, 4)   # SD: 7424 tokens of d = 4
    assert hvrl.tokens(torch.zeros(2, 4, 8, 8)).shape == (2, 64 + 36 + 16, 4)           # the toy's 8x8 latent
    pos = ticoe.sinusoidal_positions(3, 4)
    assert torch.allclose(pos[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert torch.allclose(pos[1], torch.tensor([math.sin(1), math.cos(1), math.sin(1e-2), math.cos(1e-2)]))
    with pytest.raises(ValueError, match="heads"):
        ticoe.HVRL(channels=4, heads=3)


def test_hvrl_fused_latent_has_the_unets_shape_and_learns_only_through_the_student(pipe):
    unet = pipe.unet
    side = unet.config.sample_size
    torch.manual_seed(0)
    hvrl = ticoe.HVRL(dropout=0.0)
    zt = torch.randn(1, unet.config.in_channels, side, side)
    t = torch.tensor([500])
    cond, null = torch.randn(1, 77, 64), torch.randn(1, 77, 64)
    z = hvrl(zt)
    assert z.shape == zt.shape == (1, 4, side, side)
    with esd.TrainedTensors(unet, esd.trainable_parameter_names(unet, "full")) as trained:
        loss = ticoe.negative_guidance_loss(unet, trained.frozen, z, t, cond, null, 1.0)
        loss.backward()
        got = [p.grad.clone() for p in hvrl.parameters()]
        assert all(p.grad is not None for p in trained.masters)
        assert all(p.grad is None for p in trained.originals)          # the frozen model gets no gradient
        # reference: the teacher's target as a constant computed on the detached latent
        hvrl.zero_grad()
        z = hvrl(zt)
        with torch.no_grad(), trained.frozen():
            e_c = unet(z.detach(), t, encoder_hidden_states=cond).sample
            e_0 = unet(z.detach(), t, encoder_hidden_states=null).sample
        ref = torch.nn.functional.mse_loss(unet(z, t, encoder_hidden_states=cond).sample, 2 * e_0 - e_c)
        ref.backward()
    assert math.isclose(float(loss.detach()), float(ref.detach()), rel_tol=1e-5)
    for g, p in zip(got, hvrl.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-7, rtol=1e-4)
    assert any(float(g.abs().sum()) > 0 for g in got)


# --- erase ----------------------------------------------------------------------------------------------------

def test_erase_refuses_bad_input(pipe):
    img = np.zeros((2, 32, 32, 3), np.uint8)
    cfg = ticoe.TICoEConfig(iterations=2)
    with pytest.raises(ValueError, match="needs a prompt bank"):
        ticoe.erase(pipe, "tench", cfg, images=img, progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        ticoe.erase(pipe, "tench", cfg, bank=[], images=img, progress=False)
    with pytest.raises(ValueError, match=">= 2 prompts"):
        ticoe.erase(pipe, "tench", cfg, bank=["tench"], images=img, progress=False)
    with pytest.raises(ValueError, match="bank_size=40"):
        ticoe.erase(pipe, "tench", ticoe.TICoEConfig(bank_size=40), bank=ticoe.load_bank("tench"), images=img)
    with pytest.raises(ValueError, match="reference images"):
        ticoe.erase(pipe, "tench", cfg, bank=["tench", "a tench"], images=img[:0], progress=False)
    with pytest.raises(ValueError, match="non-empty prompt"):
        ticoe.erase(pipe, " ", cfg, bank=["tench", "a tench"], images=img, progress=False)
    with pytest.raises(FloatingPointError, match="TICoE loss became nan"):
        ticoe.erase(pipe, "tench", ticoe.TICoEConfig(iterations=2, negative_guidance=float("nan")),
                    bank=["tench", "a tench"], images=img, progress=False)
    for bad in (dict(bank_size=1), dict(temperature=0), dict(scales=(0.5, 1.0)), dict(parameter_set="x"),
                dict(hvrl_dropout=1.0), dict(iterations=0)):
        with pytest.raises(ValueError):
            ticoe.TICoEConfig(**bad)
    # the pipeline is left as it was after a failure
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    with pytest.raises(FloatingPointError):
        ticoe.erase(pipe, "tench", ticoe.TICoEConfig(iterations=1, negative_guidance=float("nan")),
                    bank=["tench", "a tench"], images=img, progress=False)
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())


def test_erase_is_seeded_and_the_whole_unet(pipe):
    img = ticoe.reference_images(pipe, "tench", ticoe.TICoEConfig(reference_images=3, reference_steps=5))
    assert img.shape == (3, 32, 32, 3) and img.dtype == np.uint8
    cfg = ticoe.TICoEConfig(iterations=3)
    a = ticoe.erase(pipe, "tench", cfg, bank=["tench", "a tench", "a red tench"], images=img, progress=False)
    b = ticoe.erase(pipe, "tench", cfg, bank=["tench", "a tench", "a red tench"], images=img, progress=False)
    assert set(a) == {n for n, _ in pipe.unet.named_parameters()}
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = ticoe.erase(pipe, "tench", ticoe.TICoEConfig(iterations=3, seed=1), bank=["tench", "a tench", "a red tench"],
                    images=img, progress=False)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_posterior_matches_the_vae(pipe):
    img = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    mean, std = ticoe.posterior(pipe, img)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        dist = pipe.vae.encode(x).latent_dist
    s = pipe.vae.config.scaling_factor
    assert torch.allclose(mean, dist.mean * s, atol=1e-5) and torch.allclose(std, dist.std * s, atol=1e-5)
    with pytest.raises(ValueError, match="reference images"):
        ticoe.posterior(pipe, img[..., 0])


def _object_rates(pipe, edit, seeds_per_prompt=2):
    from erasure_lib.metrics.concept import predict_concepts
    from erasure_lib.sampling import generate
    from erasure_lib.toyworld.captions import prompt_set
    table = pd.concat([prompt_set("explicit_object"), prompt_set("lookalike")], ignore_index=True)
    table = table.loc[table.index.repeat(seeds_per_prompt)].reset_index(drop=True)
    with edited(pipe, edit):
        images = generate(pipe, table.prompt, range(len(table)), steps=10, guidance=5.0, progress=False)
    hit = predict_concepts(images)["object"].to_numpy() == table.target.to_numpy()
    t = table.target.to_numpy()
    return hit[t == "tench"].mean(), hit[t == "goldfish"].mean(), hit[~np.isin(t, ["tench", "goldfish"])].mean()


def test_erase_lowers_tench_and_keeps_goldfish(pipe):
    """The toy defaults (the code's values): the tench rate drops at the evaluation guidance (CFG 5), its look-alike
    goldfish and the other objects stay within 0.1 of the unedited model's."""
    edit = ticoe.erase(pipe, "tench", ticoe.TICoEConfig(), bank=ticoe.load_bank("tench"), progress=False)
    tench0, gold0, other0 = _object_rates(pipe, {})
    tench, gold, other = _object_rates(pipe, edit)
    assert tench0 >= 0.9 and tench <= 0.5
    assert gold >= gold0 - 0.1 and other >= other0 - 0.1


def test_chapter_reference_images_are_memoised_and_bounded(pipe, monkeypatch):
    """chapters.ticoe_edit generates a (concept, seed)'s reference images once while they are among the last four
    sets used (the ablation's variants reuse the main table's), and drops the oldest beyond that (memory on SD)."""
    from erasure_lib import chapters
    calls = []
    monkeypatch.setattr(chapters, "_REFERENCES", {})
    monkeypatch.setattr(chapters.ticoe, "reference_images", lambda p, c, cfg: calls.append(cfg.seed) or np.zeros(1))
    monkeypatch.setattr(chapters.ticoe, "erase", lambda *a, **k: {})
    for s in (0, 0, 1, 2, 3, 0, 4, 1, 0):
        chapters.ticoe_edit(pipe, "tench", seed=s, cache_dir=None)
    # 0 once while held; 4 evicts 1 (the oldest after 0 was reused), so 1 is made again, which evicts 2
    assert calls == [0, 1, 2, 3, 4, 1] and len(chapters._REFERENCES) == 4
