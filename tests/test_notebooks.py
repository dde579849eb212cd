"""Notebooks too long for nbval run here CI-sized through papermill, with their results written to a
temporary folder: every cell must run, every table must be written. (nbval checks notebooks 00 and 01 as
committed; the cells of the long notebooks carry the ``nbval-skip`` tag.)"""
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(name, tmp_path, monkeypatch, **parameters):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("ERASURE_BOOK_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                               parameters=parameters, cwd=str(ROOT / "notebooks"), kernel_name="python3",
                               progress_bar=False)
    return tmp_path / "results" / name


def _digest(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _interference_checks(out, profile="toy", concept="nudity"):
    """The chapter's interference table (issue 16): one block of rows per edit of its main table (``concept``: the
    erased concept of a main table without a concept column), every probed concept of the profile that has rows,
    rates in [0, 1] with ordered intervals, and at most one own column per edit."""
    from erasure_lib.evaluation import probe_concepts
    inter = pd.read_csv(out / "interference.csv")
    main = pd.read_csv(out / "main.csv")
    edited = main[main.method != "SD (unedited)"]
    erased = edited.concept if "concept" in edited else pd.Series(concept, index=edited.index)
    assert set(zip(inter.erased, inter.method)) == set(zip(erased, edited.method))
    probes = set(probe_concepts(profile).probed)
    assert set(inter.probed) <= probes and (profile != "toy" or set(inter.probed) == probes)
    assert inter[["rate", "clean_rate", "delta"]].notna().all().all()
    assert inter.rate.between(0, 1).all() and (inter.lo <= inter.rate).all() and (inter.rate <= inter.hi).all()
    assert (inter.delta - (inter.rate - inter.clean_rate)).abs().max() < 1e-9
    assert inter.groupby(["erased", "method"]).own.sum().le(1).all()
    assert (out / "interference.json").exists()
    return inter


def test_co_erasing_notebook_runs_ci_sized(tmp_path, monkeypatch):
    committed = ROOT / "results" / "10_co_erasing" / "main.csv"
    before = _digest(committed)
    out = _run("10_co_erasing", tmp_path, monkeypatch, iteration_cap=3, claim_seeds=[0], tradeoff_iterations=[1],
               seeds_per_prompt=1, steps=3, n_boot=20, cache_dir=None)
    main = pd.read_csv(out / "main.csv")
    assert len(main) == 3 * 5 and set(main.method) == {"SD (unedited)", "ESD-x", "ESD-u", "UCE", "Co-Erasing"}
    inter = _interference_checks(out)
    assert inter.own.sum() == 12  # every edit of the three concepts (nudity, starry, church) has its own column
    for table in ("ablation", "tradeoff", "claim"):
        assert (out / f"{table}.csv").exists() and (out / f"{table}.json").exists()
    assert _digest(committed) == before  # the committed results are not touched


def test_trce_notebook_runs_ci_sized(tmp_path, monkeypatch):
    committed = ROOT / "results" / "11_trce" / "main.csv"
    before = _digest(committed)
    out = _run("11_trce", tmp_path, monkeypatch, iteration_cap=3, claim_seeds=[0], seeds_per_prompt=1, steps=3,
               n_boot=20, cache_dir=None)
    main = pd.read_csv(out / "main.csv")
    assert list(main.method) == ["SD (unedited)", "ESD-x", "ESD-u", "UCE", "Co-Erasing", "TRCE (T)", "TRCE (T+V)"]
    assert main[["explicit", "implicit", "context-only", "FID_gen", "FID_real", "CLIP"]].notna().all().all()
    assert len(pd.read_csv(out / "ablation.csv")) == 8
    assert _interference_checks(out).own.sum() == 6
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired.claim) <= {"a", "b"} and "b" in set(paired.claim)
    assert paired.difference.between(-1, 1).all() and (paired.lo <= paired.hi).all()
    claim = pd.read_csv(out / "claim.csv")
    assert set(claim.method) == {"TRCE [EoT]", "TRCE [KEY]", "TRCE (T+V)", "ESD-u", "UCE"}
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert list(verdicts.claim) == ["a", "b"]
    assert set(verdicts.verdict) <= {"confirmed", "not confirmed", "limited by the toy world",
                                     "not confirmed, limited by the toy world"}
    assert _digest(committed) == before


def test_toy_world_notebook_calibration_runs_ci_sized(tmp_path, monkeypatch):
    """nbval checks chapter 00 as committed but skips its calibration cells (they train edits): here the whole
    chapter runs, small, and writes every calibration table with one row per fact."""
    from erasure_lib.calibration import FACTS
    committed = ROOT / "results" / "00_toy_world" / "calibration.csv"
    before = _digest(committed)
    out = _run("00_toy_world", tmp_path, monkeypatch, n_heldout=100, seeds_per_prompt=1, steps=3, iteration_cap=2,
               calibration_seeds_per_prompt=1, calibration_steps=3, calibration_guidances=[1.0, 5.0], n_boot=20,
               cache_dir=None)
    facts = pd.read_csv(out / "calibration.csv")
    assert list(facts.name) == [f.name for f in FACTS]
    assert set(facts.reproduced) <= {"yes", "no", "not measured"}
    assert facts.set_index("name").loc["attacks_raise_asr", "reproduced"] == "not measured"
    for table in ("calibration_rates", "calibration_diagnostics", "calibration_guidance_sweep"):
        assert (out / f"{table}.csv").exists() and (out / f"{table}.json").exists()
    assert (out / "zoo_quality.csv").exists()
    assert _digest(committed) == before


# --- the sd14 profile, on the SD-v1.4-shaped test model (random weights, narrow channels, built offline) ------------

# the test model and its prompt cache: the sd14_test_world fixture and sd14_env (tests/conftest.py)
from conftest import sd14_env as _sd14_env  # noqa: E402

SD14_SIZES = {"unlearndiff": 3, "i2p_sexual": 3, "objects": None, "big_artists": 10, "coco_3k": 6}

def test_evaluation_notebook_runs_on_the_sd14_test_model(tmp_path, monkeypatch, sd14_test_world):
    _sd14_env(monkeypatch, sd14_test_world)
    committed = ROOT / "results" / "01_evaluation" / "baseline.csv"
    before = _digest(committed)
    out = _run("01_evaluation", tmp_path, monkeypatch, profile="sd14", seeds_per_prompt=1, steps=2, n_boot=20,
               sd14_sizes=SD14_SIZES)
    baseline = pd.read_csv(out / "baseline.csv")
    assert {"unlearndiff", "i2p_sexual", "objects", "big_artists"} <= set(baseline.set)
    assert {"concept rate", "sensitive rate", "CLIP score"} <= set(baseline.metric)
    provenance = (out / "baseline.json").read_text()
    assert "sd14" in provenance
    assert _digest(committed) == before


def test_co_erasing_notebook_runs_on_the_sd14_test_model_at_the_papers_plan(tmp_path, monkeypatch, sd14_test_world):
    _sd14_env(monkeypatch, sd14_test_world)
    committed = ROOT / "results" / "10_co_erasing" / "main.csv"
    before = _digest(committed)
    out = _run("10_co_erasing", tmp_path, monkeypatch, profile="sd14", preset="sd14-paper", iteration_cap=2,
               claim_seeds=[0], tradeoff_iterations=[1], seeds_per_prompt=1, steps=2, n_boot=10, cache_dir=None,
               sd14_sizes=SD14_SIZES)
    main = pd.read_csv(out / "main.csv")
    assert set(main.concept) == {"nudity", "Van Gogh", "church"}
    assert set(main.method) == {"SD (unedited)", "ESD-x", "ESD-u", "UCE", "Co-Erasing"} and len(main) == 15
    assert main["FID_gen"].notna().all() and main["CLIP"].notna().all()
    assert main.loc[main.concept == "nudity", "implicit"].notna().all()
    for table in ("ablation", "tradeoff", "claim"):
        assert (out / f"{table}.csv").exists() and (out / f"{table}.json").exists()
    assert {"nudity", "Van Gogh"} <= set(_interference_checks(out, "sd14").probed)
    assert '"profile": "sd14"' in (out / "main.json").read_text()
    assert _digest(committed) == before


def test_co_erasing_notebook_default_sd14_plan_runs_on_the_sd14_test_model(tmp_path, monkeypatch, sd14_test_world):
    """The default plan on sd14 (about an hour on a T4): nudity only, ESD-u / UCE / Co-Erasing, one claim seed, no
    ablation; the parameters cell's None values come from erasure_lib.profiles.CHAPTER10_PLANS["sd14"]."""
    _sd14_env(monkeypatch, sd14_test_world)
    out = _run("10_co_erasing", tmp_path, monkeypatch, profile="sd14", iteration_cap=2, seeds_per_prompt=1, steps=2,
               n_boot=10, cache_dir=None, sd14_sizes=SD14_SIZES)
    main = pd.read_csv(out / "main.csv")
    assert set(main.concept) == {"nudity"}
    assert list(main.method) == ["SD (unedited)", "ESD-u", "UCE", "Co-Erasing"]
    assert not (out / "ablation.csv").exists()
    claim = pd.read_csv(out / "claim.csv")
    assert set(claim.seed) == {0} and set(claim.method) == {"ESD-u", "Co-Erasing"}
    tradeoff = pd.read_csv(out / "tradeoff.csv")
    assert len(tradeoff) == 2  # only the default lengths, the main table's edits (evaluated once)
    provenance = (out / "main.json").read_text()
    assert '"sample_from": "frozen"' in provenance and '"optimizer": "adafactor"' in provenance


PRIOR = ["a photo of a dog on the grass", "a red car parked on a street", "two people riding bicycles in a park",
         "a bowl of fruit on a wooden table", "a city skyline at night", "a cat sleeping on a sofa"]


def test_trce_notebook_runs_on_the_sd14_test_model(tmp_path, monkeypatch, sd14_test_world):
    """The default sd14 plan: TRCE with the code's SD v1.4 values (TRCEConfig.sd14(), its 300 sexual prompt pairs),
    ESD-u and UCE beside it, one claim seed, no ablation. The prior is given (COCO-10k is not among the reference
    prompt files)."""
    _sd14_env(monkeypatch, sd14_test_world)
    committed = ROOT / "results" / "11_trce" / "main.csv"
    before = _digest(committed)
    out = _run("11_trce", tmp_path, monkeypatch, profile="sd14", iteration_cap=2, seeds_per_prompt=1, steps=2,
               n_boot=10, cache_dir=None, sd14_sizes=SD14_SIZES, prior_captions=PRIOR)
    main = pd.read_csv(out / "main.csv")
    assert list(main.method) == ["SD (unedited)", "ESD-u", "UCE", "TRCE (T)", "TRCE (T+V)"]
    assert main[["explicit", "implicit", "FID_gen", "CLIP"]].notna().all().all()
    assert not (out / "ablation.csv").exists()
    assert set(pd.read_csv(out / "claim.csv").seed) == {0}
    assert "nudity" in set(_interference_checks(out, "sd14").probed)
    provenance = (out / "main.json").read_text()
    assert '"profile": "sd14"' in provenance and "prompt_set='sd14'" in provenance and '"pairs": 300' in provenance
    assert _digest(committed) == before


def _ticoe_checks(out, concepts, methods):
    main = pd.read_csv(out / "main.csv")
    assert list(dict.fromkeys(main.concept)) == list(concepts)
    for concept in concepts:
        expected = [m for m in methods if m != "TRCE" or concept == "nudity"]
        assert list(main[main.concept == concept].method) == expected
    obj = main[main.concept == concepts[0]]
    assert obj[["explicit", "MCP", "mcp_clean", "FID_gen", "CLIP"]].notna().all().all()
    assert obj.MCP.between(0, 1).all() and main[main.concept != concepts[0]].MCP.isna().all()
    mcp = pd.read_csv(out / "mcp.csv")
    assert list(mcp.method) == list(obj.method)
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert set(verdicts.verdict) <= {"confirmed", "not confirmed", "confirmed, limited by the toy world",
                                     "not confirmed, limited by the toy world"}
    paired = pd.read_csv(out / "paired.csv")
    assert paired.difference.between(-1, 1).all() and (paired.lo <= paired.hi).all()
    _interference_checks(out, "toy" if "nudity" in concepts else "sd14")
    return main, verdicts


def test_ticoe_notebook_runs_ci_sized(tmp_path, monkeypatch):
    committed = ROOT / "results" / "12_ticoe" / "main.csv"
    before = _digest(committed)
    out = _run("12_ticoe", tmp_path, monkeypatch, iteration_cap=3, claim_seeds=[0], seeds_per_prompt=1, mcp_seeds=1,
               steps=3, n_boot=20, cache_dir=None)
    _, verdicts = _ticoe_checks(out, ["tench", "nudity", "starry style"],
                                ["SD (unedited)", "ESD-x", "ESD-u", "UCE", "Co-Erasing", "TRCE", "TICoE"])
    assert list(verdicts.baseline) == ["ESD-u", "Co-Erasing"]
    ablation = pd.read_csv(out / "ablation.csv")
    assert len(ablation) == 7 and ablation.MCP.notna().all()
    assert set(pd.read_csv(out / "claim.csv").method) == {"TICoE", "ESD-u", "Co-Erasing"}
    assert _digest(committed) == before


def test_ticoe_notebook_runs_on_the_sd14_test_model(tmp_path, monkeypatch, sd14_test_world):
    """The default sd14 plan: tench (TICoE's Table B object) with TICoE at the code's values but Adafactor, beside
    ESD-u and UCE, one claim seed, no ablation; MCP on goldfish and whale prompts judged by CLIP zero-shot. The bank
    is a local file in the released format (the hub and GitHub are offline here)."""
    import json
    _sd14_env(monkeypatch, sd14_test_world)
    banks = tmp_path / "banks"
    banks.mkdir()
    (banks / "tench.json").write_text(json.dumps({"concept": "tench", "prompts": [
        "tench", "common tench", "European tench", "river tench", "golden tench", "large tench"]}))
    monkeypatch.setenv("ERASURE_BOOK_TICOE_BANKS", str(banks))
    committed = ROOT / "results" / "12_ticoe" / "main.csv"
    before = _digest(committed)
    out = _run("12_ticoe", tmp_path, monkeypatch, profile="sd14", iteration_cap=2, seeds_per_prompt=1, mcp_seeds=1,
               steps=2, n_boot=10, cache_dir=None, sd14_sizes=SD14_SIZES)
    _, verdicts = _ticoe_checks(out, ["tench"], ["SD (unedited)", "ESD-u", "UCE", "TICoE"])
    assert list(verdicts.baseline) == ["ESD-u"]
    assert not (out / "ablation.csv").exists()
    provenance = (out / "main.json").read_text()
    assert '"profile": "sd14"' in provenance and "optimizer='adafactor'" in provenance
    assert "reference_prompt='a photo of {concept}'" in provenance
    assert _digest(committed) == before


def _set_checks(out, attacks, detectors, seeds):
    """Chapter 30's tables: one backdoor row per attack with its ASR, one AUROC row per (attack, detector) with
    ordered intervals, the per-seed AUROCs and a computed verdict."""
    backdoors = pd.read_csv(out / "backdoors.csv")
    assert list(backdoors.attack) == attacks and backdoors.asr.between(0, 1).all()
    main = pd.read_csv(out / "main.csv")
    assert set(zip(main.attack, main.detector)) == {(a, d) for a in attacks for d in detectors}
    assert main.auroc.between(0, 1).all() and (main.auroc_lo <= main.auroc_hi).all()
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert sorted(per_seed.seed.unique()) == seeds
    claim = pd.read_csv(out / "claim.csv")
    assert claim.verdict.iat[0] in {"confirmed", "not confirmed"} and claim.best_baseline.iat[0] in detectors
    assert (out / "csrd.csv").exists() and (out / "main.json").exists()
    return main


def test_set_notebook_runs_ci_sized(tmp_path, monkeypatch):
    committed = ROOT / "results" / "30_set" / "main.csv"
    before = _digest(committed)
    out = _run("30_set", tmp_path, monkeypatch, iteration_cap=3, set_epochs=2, probe_steps=6, n_train=24, n_test=6,
               claim_seeds=[0, 1], n_boot=20, cache_dir=None, n_check=24)
    _set_checks(out, ["rickrolling", "twt", "eviledit", "villan"], ["SET", "FTT", "CDA", "UFID"], [0, 1])
    ablation = pd.read_csv(out / "ablation.csv")
    assert ablation.groupby("attack").variant.nunique().eq(7).all()
    assert _digest(committed) == before


def test_set_notebook_runs_on_the_sd14_test_model(tmp_path, monkeypatch, sd14_test_world):
    """The sd14 plan: Rickrolling (on COCO captions, target prompt "a nude person") and EvilEdit ("beautiful cat" ->
    church) planted in the SD-v1.4-shaped test model; SET at the code's values (PNDM, the 5 layers of query length
    (sample_size/4)^2, 125 features), FTT and UFID; NudeNet and CLIP zero-shot judge the ASR."""
    _sd14_env(monkeypatch, sd14_test_world)
    committed = ROOT / "results" / "30_set" / "main.csv"
    before = _digest(committed)
    out = _run("30_set", tmp_path, monkeypatch, profile="sd14", iteration_cap=2, set_epochs=2, probe_steps=6,
               n_train=12, n_test=4, n_boot=10, cache_dir=None, n_check=8)
    _set_checks(out, ["rickrolling", "eviledit"], ["SET", "FTT", "UFID"], [0])
    provenance = (out / "main.json").read_text()
    assert '"profile": "sd14"' in provenance and "scheduler='pndm'" in provenance
    assert not (out / "ablation.csv").exists()
    assert _digest(committed) == before


def _attack_checks(out, concepts, attacks):
    """Chapter 20's tables: pre-attack and post-attack ASR rows per (model, concept) with ordered intervals, the
    adversarial prompts with their budgets, the cost table, computed claim verdicts and the calibration rows."""
    main = pd.read_csv(out / "main.csv")
    assert set(main.concept) == set(concepts) and main.asr.between(0, 1).all()
    assert ((main.lo <= main.asr + 1e-9) & (main.asr <= main.hi + 1e-9)).all()
    assert "none (pre-attack)" in set(main.attack) and set(attacks) <= set(main.attack)
    # post-attack ASR counts the pre-attack successes too: never below the same model's pre-attack ASR
    pre = main[main.attack == "none (pre-attack)"].set_index(["method", "concept"]).asr
    post = main[main.attack != "none (pre-attack)"]
    assert all(r.asr >= pre[(r.method, r.concept)] - 1e-9 for r in post.itertuples())
    prompts = pd.read_csv(out / "adversarial_prompts.csv")
    assert set(prompts.attack) == set(attacks) and prompts.adversarial_prompt.notna().all()
    assert (prompts.iterations >= 0).all() and {"evaluation_seed", "token_ids", "seed_prompt"} <= set(prompts.columns)
    cost = pd.read_csv(out / "cost.csv")
    assert set(cost.attack) == set(attacks)
    return main


def test_attacks_notebook_runs_ci_sized(tmp_path, monkeypatch):
    committed = ROOT / "results" / "20_attacks" / "main.csv"
    before = _digest(committed)
    out = _run("20_attacks", tmp_path, monkeypatch, iteration_cap=2, n_prompts=1, attack_seeds=[0, 1],
               concepts=["nudity", "tench"], n_boot=20, cache_dir=None, steps=6)
    _attack_checks(out, ["nudity", "tench"], ["UnlearnDiffAtk", "P4D", "Ring-A-Bell", "MMA"])
    claims = pd.read_csv(out / "claims.csv")
    assert len(claims) == 3
    assert set(claims.verdict) <= {"confirmed", "not confirmed", "limited by the toy world", "not measured"}
    calibration = pd.read_csv(out / "calibration.csv")
    assert {"uda_esd_nudity", "uda_uce_nudity", "uda_esd_church"} == set(calibration.name)
    assert _digest(committed) == before


def test_attacks_notebook_runs_on_the_sd14_test_model(tmp_path, monkeypatch, sd14_test_world):
    """The sd14 plan: UnlearnDiffAtk at the code's budget shape (capped) against ESD-u, UCE and Co-Erasing of
    nudity on the SD-v1.4-shaped test model, and the released P4D and MMA files as transfer attacks (NudeNet)."""
    _sd14_env(monkeypatch, sd14_test_world)
    committed = ROOT / "results" / "20_attacks" / "main.csv"
    before = _digest(committed)
    out = _run("20_attacks", tmp_path, monkeypatch, profile="sd14", iteration_cap=1, n_prompts=1, n_released=2,
               n_boot=10, cache_dir=None, steps=2)
    _attack_checks(out, ["nudity"], ["UnlearnDiffAtk"])
    released = pd.read_csv(out / "released.csv")
    assert set(released.file) == {"p4d", "mma"} and (released.n == 2).all()
    assert '"profile": "sd14"' in (out / "main.json").read_text()
    assert _digest(committed) == before


def _ns_net_checks(out, detectors, seeds, generators, unseen):
    """Chapter 40's tables: one row per (detector, seed, generator) with metrics in [0, 1] and ordered intervals
    at the first seed, the claim's computed verdicts, the semantic-bias table, the cost table."""
    per = pd.read_csv(out / "per_generator.csv")
    assert set(per.detector) == set(detectors) and set(per.seed) == set(seeds)
    assert set(per.generator) == set(generators) and len(per) == len(detectors) * len(seeds) * len(generators)
    for m in ("acc", "ap", "real_acc", "fake_acc"):
        assert per[m].between(0, 1).all()
    first = per[per.seed == seeds[0]]
    assert ((first.acc_lo <= first.acc + 1e-9) & (first.acc <= first.acc_hi + 1e-9)).all()
    assert (per.seen_in_training == ~per.generator.isin(unseen)).all()
    claim = pd.read_csv(out / "claim.csv")
    assert set(claim.baseline) == {"UnivFD", "CLIP+LoRA"} and (claim.n_units == len(seeds) * len(unseen)).all()
    assert set(claim.verdict) <= {"confirmed", "not confirmed", "limited by the toy world", "not measured"}
    for r in claim.itertuples():   # the rule stated in the chapter, applied to the table's own numbers
        if r.baseline_seen_acc >= 0.6:
            assert r.verdict == ("confirmed" if r.lo > 0 else "not confirmed")
        else:
            assert r.verdict in ("limited by the toy world", "not measured")
        assert r.lo <= r.difference <= r.hi
    bias = pd.read_csv(out / "semantic_bias.csv")
    assert list(bias.features) == ["before", "after"] and bias.r2_content.between(0, 1).all()
    assert set(pd.read_csv(out / "cost.csv").detector) == set(detectors)
    return per


def test_ns_net_notebook_runs_ci_sized(tmp_path, monkeypatch):
    from erasure_lib.detect.aigi_bench import TOY_GENERATORS, TRAIN_GENERATORS
    committed = ROOT / "results" / "40_ns_net" / "per_generator.csv"
    before = _digest(committed)
    out = _run("40_ns_net", tmp_path, monkeypatch, n_train=48, n_test=16, claim_seeds=[0, 1], epochs=1, steps=3,
               n_boot=20, cache_dir=None)
    names = [g.name for g in TOY_GENERATORS]
    _ns_net_checks(out, ["NS-Net", "CLIP+LoRA", "UnivFD", "CNN"], [0, 1], names,
                   [g for g in names if g not in TRAIN_GENERATORS])
    generators = pd.read_csv(out / "generators.csv")
    assert list(generators.source) == ["real"] + names and generators.subject.between(0, 1).all()
    assert len(pd.read_csv(out / "ablation.csv")) == 7
    assert _digest(committed) == before


def test_ns_net_notebook_runs_on_the_sd14_test_model(tmp_path, monkeypatch, sd14_test_world):
    """The sd14 plan: real images from a folder in UniversalFakeDetect's layout (0_real / 1_fake, captions.json
    beside them), fakes of the SD-v1.4-shaped test model, its UCE-erased variant and its VAE, the folder's own
    fakes as an external generator; NS-Net at the spec's values on the ViT-L/14-shaped random CLIP."""
    import json

    from PIL import Image

    from erasure_lib.detect.aigi_bench import scene_set
    from erasure_lib.toyworld.render import render_batch
    _sd14_env(monkeypatch, sd14_test_world)
    folder = tmp_path / "photos"
    (folder / "0_real").mkdir(parents=True)
    (folder / "1_fake").mkdir()
    captions = {}
    for split, n in (("train", 10), ("test", 8)):
        scenes = scene_set(split, n, seed=5)
        images = (render_batch(scenes.scenes, seeds=scenes.seeds) * 255).round().astype("uint8")
        for i, (im, text) in enumerate(zip(images, scenes.captions)):
            name = f"0_real/{split}{i:02d}.png"
            Image.fromarray(im).resize((96, 80)).save(folder / name)
            captions[name] = text
            if split == "test" and i < 4:
                fake = f"1_fake/{i:02d}.png"
                Image.fromarray(im[:, ::-1]).resize((64, 64)).save(folder / fake)
                captions[fake] = text
    (folder / "captions.json").write_text(json.dumps(captions))
    committed = ROOT / "results" / "40_ns_net" / "per_generator.csv"
    before = _digest(committed)
    out = _run("40_ns_net", tmp_path, monkeypatch, profile="sd14", real_folder=str(folder), n_train=6, n_test=4,
               epochs=1, steps=2, n_boot=10, cache_dir=None)
    gens = ["SD-v1.4", "SD-v1.4-DPM++", "SD-v1.4-UCE", "SD-VAE", "external"]
    _ns_net_checks(out, ["NS-Net", "CLIP+LoRA", "UnivFD", "CNN"], [0], gens, gens[1:])
    provenance = (out / "per_generator.json").read_text()
    assert '"profile": "sd14"' in provenance and "lora_rank=6" in provenance and "'q_proj', 'k_proj'" in provenance
    assert not (out / "ablation.csv").exists()
    assert _digest(committed) == before
