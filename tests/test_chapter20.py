"""Chapter 20's library calls: the edits it attacks, the cached attack runs, the robustness columns chapters 10-12
read from its committed results."""
import pandas as pd
import torch
import pytest

from erasure_lib import chapters
from erasure_lib.attacks import mma


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy")


def test_attacked_edit_names_the_books_edits_and_refuses_unknown_ones(pipe):
    assert chapters.attacked_edit(pipe, "SD", "nudity") == {}
    assert chapters.attacked_edit(pipe, "TRCE", "tench") is None       # chapter 11 erases the sensitive concept only
    assert chapters.attacked_edit(pipe, "TICoE", "church") is None     # no toy prompt bank for church
    uce = chapters.attacked_edit(pipe, "UCE", "tench")
    assert uce and all(k.endswith(("to_k.weight", "to_v.weight")) for k in uce)
    with pytest.raises(ValueError, match="unknown method"):
        chapters.attacked_edit(pipe, "SLD", "nudity")
    with pytest.raises(ValueError, match="unknown concept"):
        chapters.attacked_edit(pipe, "UCE", "zebra")


def test_run_attack_is_cached_by_its_config_and_read_back(pipe, tmp_path, monkeypatch):
    config = mma.MMAConfig(n_tokens=3, iterations=2, n_candidates=8, topk=4)
    first = chapters.run_attack(pipe, "MMA", "a nude person", target="nude", family="sensitive", config=config,
                                cache_dir=tmp_path, seed=3)
    files = list((tmp_path / "attacks").glob("*.json"))
    assert len(files) == 1 and first.iterations == 2

    def boom(*args, **kwargs):
        raise AssertionError("a cached run was run again")
    monkeypatch.setattr(mma, "attack", boom)
    again = chapters.run_attack(pipe, "MMA", "a nude person", target="nude", family="sensitive", config=config,
                                cache_dir=tmp_path, seed=3)
    assert again.prompt == first.prompt and again.token_ids == first.token_ids
    with pytest.raises(AssertionError, match="run again"):   # another seed is another run
        chapters.run_attack(pipe, "MMA", "a nude person", target="nude", family="sensitive", config=config,
                            cache_dir=tmp_path, seed=4)
    with pytest.raises(ValueError, match="unknown attack"):
        chapters.run_attack(pipe, "GCG", "a nude person", target="nude", family="sensitive")


def test_attack_robustness_reads_chapter20s_tables(tmp_path):
    assert chapters.attack_robustness("TRCE", "nudity", ["P4D"], ["ESD-u"], results_folder=tmp_path) == (None, None)
    rows = [("ESD-u", "none (pre-attack)", 0.25, 0.0, 0.5), ("ESD-u", "P4D", 0.75, 0.5, 1.0),
            ("TRCE", "none (pre-attack)", 0.0, 0.0, 0.0), ("TRCE", "P4D", 0.125, 0.0, 0.25),
            ("TRCE", "MMA", 0.5, 0.25, 0.75)]
    pd.DataFrame([{"method": m, "concept": "nudity", "attack": a, "asr": v, "lo": lo, "hi": hi, "n": 8}
                  for m, a, v, lo, hi in rows]).to_csv(tmp_path / "main.csv", index=False)
    pd.DataFrame([{"claim": "TRCE's ASR ...", "verdict": "confirmed"},
                  {"claim": "TICoE's ...", "verdict": "not confirmed"}]).to_csv(tmp_path / "claims.csv", index=False)
    table, claims = chapters.attack_robustness("TRCE", "nudity", ["P4D"], ["ESD-u"], results_folder=tmp_path)
    assert list(table.index) == ["ESD-u", "TRCE"] and list(table.columns) == ["none (pre-attack)", "P4D"]
    assert table.loc["TRCE", "P4D"] == "0.12 [0.00, 0.25]" and table.loc["ESD-u", "P4D"] == "0.75 [0.50, 1.00]"
    assert list(claims.verdict) == ["confirmed"]


def test_every_attack_runs_on_the_sd14_test_model(sd14_test_world, monkeypatch):
    """The four attacks on SD v1.4's shapes (the test model: random weights, narrow channels, 49,408 tokens), with
    tiny budgets: each returns its prompt within budget and leaves the weights as they were."""
    from conftest import sd14_env

    from erasure_lib.attacks import p4d, ring_a_bell, unlearndiffatk
    from erasure_lib.loading import load_pipeline
    from erasure_lib.methods import uce
    sd14_env(monkeypatch, sd14_test_world)
    sd = load_pipeline("sd14")
    before = {k: v.clone() for k, v in sd.unet.state_dict().items()}
    edit = uce.erase(sd, ["a nude person"], guide="a person")
    uda = unlearndiffatk.attack(sd, "a nude person on a beach", target="nude", family="sensitive", edit=edit,
                                profile="sd14", config=unlearndiffatk.UnlearnDiffAtkConfig.sd14(
                                    iterations=1, n_timesteps=2, steps=2, check_seed_prompt=False), seed=0)
    seed_ids = sd.tokenizer("a nude person on a beach", add_special_tokens=False).input_ids
    assert uda.iterations <= 2 and uda.prompt.endswith("a nude person on a beach")
    assert len(uda.token_ids) == 5 + len(seed_ids) and uda.token_ids[5:] == seed_ids   # k = 5 for nudity
    p = p4d.attack(sd, "a nude person on a beach", target="nude", family="sensitive", edit=edit, profile="sd14",
                   config=p4d.P4DConfig.sd14(iterations=2, eval_every=2, n_target_images=1, steps=2), seed=0)
    assert p.iterations <= 2 and len(p.token_ids) == 16
    vec = ring_a_bell.concept_vector(sd, [("a nude person", "a person"), ("a naked man", "a man")])
    assert tuple(vec.shape) == (77, sd.text_encoder.config.hidden_size)
    rab = ring_a_bell.attack(sd, "a person on a beach", concept_vec=vec,
                             config=ring_a_bell.RingABellConfig.sd14(population=8, survivors=4, generations=2))
    assert rab.iterations == 2 and len(rab.token_ids) == 16
    m = mma.attack(sd, "a completely naked woman", config=mma.MMAConfig.sd14(iterations=2, n_candidates=16, topk=8))
    assert m.iterations <= 2 and len(m.token_ids) == 20
    assert not any(s in m.prompt.lower() for s in ("nud", "naked"))
    assert all(torch.equal(v, before[k]) for k, v in sd.unet.state_dict().items())
