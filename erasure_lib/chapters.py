"""The edits the erasure chapters train, as library functions: a later chapter loads an earlier chapter's cached
edit by building exactly the config that chapter trained and cached (:func:`~erasure_lib.methods.cache.cached_edit`
keys an edit by its metadata), instead of a notebook cell copying another notebook's cell.

* :func:`esd_edit`, :func:`co_erasing_edit`: chapter 10's ESD-x / ESD-u and Co-Erasing edits (its plan's config
  overrides, :data:`erasure_lib.profiles.CHAPTER10_PLANS`); chapter 11 and 12 reuse them.
* :func:`trce_edit`: chapter 11's TRCE edit (:data:`erasure_lib.profiles.CHAPTER11_PLANS`).
* :func:`ticoe_edit`: chapter 12's TICoE edit (:data:`erasure_lib.profiles.CHAPTER12_PLANS`), its prompt bank from
  :func:`erasure_lib.methods.ticoe.load_bank` and its reference images generated once per (concept, seed) and kept
  in memory (the last four sets) for the ablation's variants.

* :func:`backdoor`: chapter 30's backdoored models (:data:`BACKDOORS`), planted once per (attack, seed, base model)
  and cached like the edits.

``iteration_cap`` (a smoke test: every training at most that long, fewer trajectories and images) and ``optimizer``
behave as in the chapters' parameters cells; ``None`` leaves the configs, and so the cache keys, as they are.
"""
from __future__ import annotations

from .methods import co_erasing, ticoe, trce
from .methods.cache import cached_edit
from .methods.edits import Edit
from .profiles import chapter10_plan, chapter11_plan, chapter12_plan
from .tasks import baseline_edit, concepts, method_config


def _capped(n: int, iteration_cap: int | None) -> int:
    return n if iteration_cap is None else min(n, iteration_cap)


def _smoke(iteration_cap: int | None, optimizer: str | None = None, **extra) -> dict:
    opt = {} if optimizer is None else {"optimizer": optimizer}
    return {**opt, **({} if iteration_cap is None else {"pool_size": min(32, max(2, iteration_cap)), **extra})}


def esd_edit(pipe, method: str, name: str, *, seed: int = 0, cache_dir=None, profile: str = "toy",
             preset: str | None = None, iterations: int | None = None, iteration_cap: int | None = None,
             optimizer: str | None = None) -> Edit:
    """Chapter 10's ``method`` (``"ESD-x"`` / ``"ESD-u"``) edit of concept ``name``."""
    plan = chapter10_plan(profile, preset)
    overrides = {**plan.esd, "iterations": _capped(iterations or method_config(method, profile).iterations,
                                                   iteration_cap), **_smoke(iteration_cap, optimizer)}
    return baseline_edit(pipe, method, name, seed=seed, cache_dir=cache_dir, esd_overrides=overrides, profile=profile)


def co_erasing_config(*, variant: str = "full", seed: int = 0, profile: str = "toy", preset: str | None = None,
                      iterations: int | None = None, iteration_cap: int | None = None, optimizer: str | None = None):
    """Chapter 10's Co-Erasing config (its text stage: chapter 10's ESD-u of the same seed)."""
    plan = chapter10_plan(profile, preset)
    default = method_config("Co-Erasing", profile, **plan.co_erasing)
    return method_config(
        "Co-Erasing", profile, variant=variant, seed=seed,
        iterations=_capped(iterations or default.iterations, iteration_cap),
        text_stage=method_config("ESD-u", profile, seed=seed, **{
            **plan.esd, **_smoke(iteration_cap, optimizer),
            "iterations": _capped(default.text_stage.iterations, iteration_cap)}),
        **{**plan.co_erasing, **_smoke(iteration_cap, optimizer,
                                       image_number=min(default.image_number, 4 * (iteration_cap or 1)))})


def co_erasing_edit(pipe, name: str, *, ip_pipe=None, variant: str = "full", seed: int = 0, cache_dir=None,
                    profile: str = "toy", preset: str | None = None, iterations: int | None = None,
                    iteration_cap: int | None = None, optimizer: str | None = None) -> Edit:
    """Chapter 10's Co-Erasing edit of concept ``name``. ``ip_pipe``: the pipeline with the IP-Adapter (loaded on
    the CPU when not given, and only if the edit is not cached); moved to ``pipe``'s device while it trains."""
    from .loading import load_ip_adapter, load_pipeline
    cfg = co_erasing_config(variant=variant, seed=seed, profile=profile, preset=preset, iterations=iterations,
                            iteration_cap=iteration_cap, optimizer=optimizer)
    prompt = concepts(profile)[name]["prompt"]

    def train():
        text = None if variant == "image_only" else esd_edit(
            pipe, "ESD-u", name, seed=seed, cache_dir=cache_dir, profile=profile, preset=preset,
            iteration_cap=iteration_cap, optimizer=optimizer)
        ip = ip_pipe if ip_pipe is not None else load_ip_adapter(
            load_pipeline(profile, device="cpu", dtype=pipe.unet.dtype), profile)
        ip.to(pipe.device)
        try:
            return co_erasing.erase(pipe, ip, prompt, cfg, progress=False, text_edit=text)
        finally:
            ip.to("cpu")
    return cached_edit(cache_dir, co_erasing.metadata(prompt, cfg), train, pipe=pipe)


def trce_config(*, seed: int = 0, profile: str = "toy", preset: str | None = None,
                iteration_cap: int | None = None, **overrides) -> trce.TRCEConfig:
    """Chapter 11's TRCE config (the code's SD v1.4 values on sd14)."""
    make = {"toy": trce.TRCEConfig, "sd14": trce.TRCEConfig.sd14}[profile]
    small = {} if iteration_cap is None else dict(seeds_per_prompt=1, epochs=1, regularisation_trajectories=4,
                                                  ddim_steps=10, max_early_step=3, prior_size=200)
    return make(**{"seed": seed, **chapter11_plan(profile, preset).trce, **small, **overrides})


def trce_edit(pipe, name: str = "nudity", *, seed: int = 0, cache_dir=None, profile: str = "toy",
              preset: str | None = None, iteration_cap: int | None = None, **overrides) -> Edit:
    """Chapter 11's TRCE edit (both stages unless ``stage2=False``) of concept ``name`` (TRCE's pairs exist for
    the sensitive concept, and on the toy also for church and the starry style)."""
    cfg = trce_config(seed=seed, profile=profile, preset=preset, iteration_cap=iteration_cap, **overrides)
    return cached_edit(cache_dir, trce.metadata(name, cfg),
                       lambda: trce.erase(pipe, name, cfg, progress=False), pipe=pipe)


# (base model, prompt, seed, n, steps, guidance) -> TICoE's reference images, the last _KEEP_REFERENCES sets (chapter
# 12's ablation reuses the main table's first concept's images after two other concepts; 200 SD-sized images hold
# 150 MB)
_REFERENCES: dict = {}
_KEEP_REFERENCES = 4


def ticoe_config(*, seed: int = 0, profile: str = "toy", preset: str | None = None,
                 iteration_cap: int | None = None, **overrides) -> ticoe.TICoEConfig:
    """Chapter 12's TICoE config: the method's defaults (sd14: ``TICoEConfig.sd14``), the plan's overrides, then
    ``overrides`` (the ablation's switches); with ``iteration_cap``, also at most 8 reference images and a mixture
    re-drawn every ``iteration_cap // 2`` iterations."""
    import dataclasses
    cfg = method_config("TICoE", profile, **{"seed": seed, **chapter12_plan(profile, preset).ticoe, **overrides})
    if iteration_cap is None:
        return cfg
    return dataclasses.replace(cfg, iterations=_capped(cfg.iterations, iteration_cap),
                               reference_images=min(cfg.reference_images, 8),
                               resample_every=max(1, min(cfg.resample_every, iteration_cap // 2)))


def ticoe_edit(pipe, name: str, *, seed: int = 0, cache_dir=None, profile: str = "toy", preset: str | None = None,
               iteration_cap: int | None = None, bank: list | None = None, **overrides) -> Edit:
    """Chapter 12's TICoE edit of concept ``name`` with its prompt bank (:func:`~erasure_lib.methods.ticoe.load_bank`;
    ``bank`` replaces it) and ``overrides`` of the config (``cccm``, ``hvrl``, ``bank_size``, ``scales``)."""
    from .methods.cache import base_model
    if profile == "sd14" and name in ticoe.SD14_REFERENCE_PROMPTS:  # the code's prompt per concept
        overrides = {"reference_prompt": ticoe.SD14_REFERENCE_PROMPTS[name], **overrides}
    cfg = ticoe_config(seed=seed, profile=profile, preset=preset, iteration_cap=iteration_cap, **overrides)
    prompt = concepts(profile)[name]["prompt"]
    bank = list(bank) if bank is not None else ticoe.load_bank(name, profile)

    def train():
        key = (tuple(sorted(base_model(pipe).items())), (cfg.reference_prompt or "{concept}").format(concept=prompt),
               cfg.seed, cfg.reference_images, cfg.reference_steps, cfg.reference_guidance)
        if key not in _REFERENCES:
            while len(_REFERENCES) >= _KEEP_REFERENCES:
                _REFERENCES.pop(next(iter(_REFERENCES)))  # the oldest
            _REFERENCES[key] = ticoe.reference_images(pipe, prompt, cfg)
        else:
            _REFERENCES[key] = _REFERENCES.pop(key)  # now the newest
        return ticoe.erase(pipe, prompt, cfg, bank=bank, images=_REFERENCES[key], progress=False)
    return cached_edit(cache_dir, ticoe.metadata(prompt, cfg, bank), train, pipe=pipe)


__all__ = ["attack_robustness", "attacked_edit", "backdoor", "co_erasing_config", "co_erasing_edit", "esd_edit",
           "run_attack", "ticoe_config", "ticoe_edit", "trce_config", "trce_edit"]


# --- chapter 30: the backdoors SET is tested against -------------------------------------------------------------

BACKDOORS = ("rickrolling", "twt", "eviledit", "villan")
SD14_EVILEDIT_TARGET = "church"  # an Imagenette class, so the sd14 judge (CLIP zero-shot) can tell it; the code: zebra


def _sd14_captions(n: int, seed: int) -> list[str]:
    from .prompts import load_prompts
    table = load_prompts("coco_3k", "sd14")
    order = __import__("numpy").random.default_rng(seed).permutation(len(table))
    return [str(table.prompt.iat[i]) for i in order[:n]]


def backdoor(pipe, attack: str, *, seed: int = 0, cache_dir=None, profile: str = "toy",
             iteration_cap: int | None = None, progress: bool = True):
    """Chapter 30's ``attack`` (one of :data:`BACKDOORS`) planted in ``pipe`` with the profile's configuration,
    cached in ``cache_dir`` by its metadata and the base model.

    toy: each attack's toy defaults (:mod:`erasure_lib.backdoors`), seeded by ``seed``. sd14: the reference values
    (``.sd14()``), the text-encoder attacks on COCO captions (target prompt "a nude person": Rickrolling's
    target-prompt form), EvilEdit's trigger "beautiful cat" onto :data:`SD14_EVILEDIT_TARGET`; VillanDiffusion
    needs image data the sd14 plan does not make (it raises). ``iteration_cap``: at most that many training steps
    (a smoke test)."""
    from dataclasses import replace

    from .backdoors import cached_backdoor, eviledit, text_encoder, villan
    if attack not in BACKDOORS:
        raise ValueError(f"unknown backdoor {attack!r}; valid: {', '.join(BACKDOORS)}")
    cap = (lambda n: n) if iteration_cap is None else (lambda n: min(n, iteration_cap))  # noqa: E731
    if attack == "eviledit":
        config = eviledit.EvilEditConfig(seed=seed) if profile == "toy" else \
            eviledit.EvilEditConfig.sd14(target=SD14_EVILEDIT_TARGET, seed=seed)
        return eviledit.cached(cache_dir, pipe, config)
    if attack == "villan":
        if profile != "toy":
            raise ValueError("the sd14 plan of chapter 30 plants no VillanDiffusion backdoor: its LoRA needs "
                             "(caption, image) data and a target image; use villan.plant with your own")
        config = villan.VillanConfig(seed=seed)
        return villan.cached(cache_dir, pipe, replace(config, steps=cap(config.steps)), progress=progress)
    spec = text_encoder.RICKROLLING if attack == "rickrolling" else text_encoder.TWT
    if profile == "toy":
        config = text_encoder.TextEncoderBackdoorConfig(seed=seed)
        return text_encoder.cached(cache_dir, pipe, spec, replace(config, steps=cap(config.steps)), progress=progress)
    config = replace(text_encoder.TextEncoderBackdoorConfig.sd14(), seed=seed)
    config = replace(config, steps=cap(config.steps))
    captions = _sd14_captions(2000 if iteration_cap is None else 32, seed)
    clean, poisonable = captions[: len(captions) // 2], captions[len(captions) // 2:]
    meta = {"attack": spec.name, "spec": spec.__dict__, "hyperparameters": config.__dict__, "data": "coco_3k",
            "n_captions": len(captions), "implementation": 1}
    return cached_backdoor(cache_dir, meta, lambda: text_encoder.plant(
        pipe, spec, config, clean_prompts=clean, parts=[(c, "") for c in poisonable], progress=progress), pipe=pipe)


# --- chapter 20: the attacks against every erased model ----------------------------------------------------------

ATTACKED_METHODS = ("SD", "ESD-x", "ESD-u", "UCE", "Co-Erasing", "TRCE", "TICoE")
TRCE_CONCEPTS = {"toy": ("nudity",), "sd14": ("nudity",)}   # chapter 11 erases the sensitive concept


def attacked_edit(pipe, method: str, name: str, *, seed: int = 0, cache_dir=None, profile: str = "toy",
                  iteration_cap: int | None = None):
    """The edit chapter 20 attacks: ``method``'s erasure of concept ``name`` as chapters 10-12 trained it (same
    configuration, so their cached edits are reused); ``{}`` for ``"SD"`` (the unedited model); ``None`` when the
    book has no such edit (TRCE of a concept other than chapter 11's, TICoE of a concept without a prompt bank)."""
    if method not in ATTACKED_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(ATTACKED_METHODS)}")
    if name not in concepts(profile):
        raise ValueError(f"unknown concept {name!r} of profile {profile!r}; valid: {', '.join(concepts(profile))}")
    if method == "SD":
        return {}
    if method in ("ESD-x", "ESD-u"):
        return esd_edit(pipe, method, name, seed=seed, cache_dir=cache_dir, profile=profile,
                        iteration_cap=iteration_cap)
    if method == "UCE":
        return baseline_edit(pipe, "UCE", name, profile=profile)
    if method == "Co-Erasing":
        return co_erasing_edit(pipe, name, seed=seed, cache_dir=cache_dir, profile=profile,
                               iteration_cap=iteration_cap)
    if method == "TRCE":
        if name not in TRCE_CONCEPTS.get(profile, ()):
            return None
        return trce_edit(pipe, name, seed=seed, cache_dir=cache_dir, profile=profile, iteration_cap=iteration_cap)
    if profile == "toy":
        from .toyworld.banks import BANK_CONCEPTS
        has_bank = name in BANK_CONCEPTS
    else:
        has_bank = name in ticoe.SD14_BANKS
    if not has_bank:
        return None
    bank = ticoe.load_bank(name, profile)
    return ticoe_edit(pipe, name, seed=seed, cache_dir=cache_dir, profile=profile, iteration_cap=iteration_cap,
                      bank=bank)


def run_attack(pipe, attack: str, seed_prompt: str, *, target: str, family: str, edit=None, method: str = "SD",
               seed: int = 0, profile: str = "toy", config=None, cache_dir=None, progress: bool = False, **kwargs):
    """One cached attack run: ``attack`` (``"UnlearnDiffAtk"``, ``"P4D"``, ``"Ring-A-Bell"``, ``"MMA"``) from
    ``seed_prompt`` against ``pipe`` with ``edit`` (the white-box attacks; the text-encoder attacks ignore it),
    read from ``cache_dir/attacks/`` when the same (attack, config, edit, base model, prompt, target, seed) ran
    before, else run and written there (atomically: an interrupted chapter resumes where it stopped). Ring-A-Bell
    needs ``concept_vec``; P4D takes ``mode``. Returns an :class:`~erasure_lib.attacks.AttackResult`."""
    import dataclasses

    from .attacks import base as base_module
    from .attacks import load_results, mma, p4d, ring_a_bell, save_results, unlearndiffatk
    from .methods.cache import base_model, cache_folder, edit_fingerprint, edit_key
    modules = {"UnlearnDiffAtk": unlearndiffatk, "P4D": p4d, "Ring-A-Bell": ring_a_bell, "MMA": mma}
    if attack not in modules:
        raise ValueError(f"unknown attack {attack!r}; valid: {', '.join(modules)}")
    white_box = attack in ("UnlearnDiffAtk", "P4D")
    module = modules[attack]
    config_class = {"UnlearnDiffAtk": "UnlearnDiffAtkConfig", "P4D": "P4DConfig", "Ring-A-Bell": "RingABellConfig",
                    "MMA": "MMAConfig"}[attack]
    resolved = config if config is not None else getattr(module, config_class)()
    key_meta = {"attack": attack, "config": dataclasses.asdict(resolved),
                "seed_prompt": seed_prompt, "target": target, "family": family, "seed": seed, "profile": profile,
                "edit": edit_fingerprint(edit) if white_box and edit else None, **base_model(pipe),
                "kwargs": {k: (_tensor_digest(v) if hasattr(v, "shape") else v) for k, v in kwargs.items()},
                # the attack's code: a change to the module or to the shared base reruns its cached runs
                "code": _source_digest(module, base_module)}
    path = None
    if cache_dir is not None:
        path = cache_folder(cache_dir) / "attacks" / f"{attack.lower()}-{edit_key(key_meta)}.json"
        if path.exists():
            return load_results(path)[0]
    if white_box:
        result = module.attack(pipe, seed_prompt, target=target, family=family, edit=edit or None, profile=profile,
                               config=config, seed=seed, progress=progress, **kwargs)
    else:   # model-agnostic: the text encoder only
        result = module.attack(pipe, seed_prompt, config=config, seed=seed, progress=progress, **kwargs)
    result.metadata.setdefault("method", method)
    if path is not None:
        save_results([result], path)
    return result


def _source_digest(*modules) -> str:
    import hashlib
    import inspect
    return hashlib.sha256("".join(inspect.getsource(m) for m in modules).encode()).hexdigest()[:16]


def _tensor_digest(value) -> str:
    import hashlib

    import torch

    from .methods.cache import _bytes
    return hashlib.sha256(_bytes(torch.as_tensor(value, dtype=torch.float32))).hexdigest()[:16]


def attack_robustness(method: str, concept: str, attacks, baselines, results_folder=None):
    """The post-attack columns of ``method`` and its ``baselines`` on ``concept`` and the verdict of ``method``'s
    robustness claim, read from chapter 20's *committed* results (``results/20_attacks/``: ``main.csv``,
    ``claims.csv``; the provenance is in their ``.json``), not recomputed: ``(table, claims)``, the table one row per
    model with "ASR [lo, hi]" per attack (the pre-attack column first), or ``(None, None)`` when chapter 20 has not
    been run."""
    import pandas as pd

    from .results import ROOT
    folder = ROOT / "results" / "20_attacks" if results_folder is None else results_folder
    if not (folder / "main.csv").exists() or not (folder / "claims.csv").exists():
        return None, None
    main, claims = pd.read_csv(folder / "main.csv"), pd.read_csv(folder / "claims.csv")
    columns = ["none (pre-attack)", *attacks]
    models = [*baselines, method]
    rows = main[(main.concept == concept) & main.method.isin(models) & main.attack.isin(columns)]
    rows = rows.assign(cell=[f"{a:.2f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in zip(rows.asr, rows.lo, rows.hi)])
    table = rows.pivot(index="method", columns="attack", values="cell")
    table = table.reindex(index=[m for m in models if m in table.index],
                          columns=[c for c in columns if c in table.columns])
    return table, claims[claims.claim.str.startswith(method)].reset_index(drop=True)
