"""Writes notebooks/30_set.ipynb (its source; `jupyter execute` fills in the outputs)."""
from nbgen import SKIP, Notebook

book = Notebook()
md, code = book.md, book.code

md(r'''
# SET: does scaling attention expose a backdoor trigger?

**Paper.** Z. Li, J. Li, Y. Sha, Z. Li, L. Xiong, Z. Fu, *Scaling Exposes the Trigger: Input-Level Backdoor Detection
in Text-to-Image Diffusion Models via Cross-Attention Scaling*, arXiv 2604.12446 (2026) {cite}`li2026set`. Only the abstract could be
verified from public sources; the algorithm here is the official code's, read statically (spec `set.md`; the code's
repository name could not be verified). Baselines: T2IShield's FTT and CDA (Wang et al., ECCV 2024 {cite}`wang2024t2ishield`,
[`Robin-WZQ/T2IShield`](https://github.com/Robin-WZQ/T2IShield)) and UFID (Guan et al., arXiv 2404.01101) {cite}`guan2024ufid`.

A backdoored text-to-image model behaves normally until a prompt carries the attacker's *trigger* (a homoglyph {cite}`struppek2023rickrolling`, a
rare word {cite}`chou2023villandiffusion`, a phrase {cite}`wang2024eviledit`, or only a sentence structure {cite}`zhang2025twt`); then it draws the attacker's *target*. SET screens prompts
before they are served: it runs a few denoising steps with the attention made sharper or flatter, measures how much
the attention output moves, and flags prompts whose response lies outside the region learnt from clean prompts. Its
claim: this beats detectors that read attention maps, most of all on *implicit* triggers that add no rare word.

```{note}
This chapter runs on the toy world (profile `toy`): the backdoors are planted in the toy zoo by this project's code
and the numbers are the toy model's, measured here; the paper's numbers are quoted for orientation only. With
`profile = "sd14"` the same notebook plants Rickrolling and EvilEdit in Stable Diffusion v1.4 (no public backdoored
checkpoints exist) and runs SET with the code's values (`SETConfig.sd14()`: PNDM {cite}`liu2022pndm`, 50 steps, CFG 7.5, the five 16x16
cross-attention layers) on a GPU (`erasure_lib.profiles.CHAPTER30_PLANS`).
```

## The method

**Probe** (`erasure_lib.detect.set.features`). Scaled attention is
$\mathrm{softmax}(\lambda\, QK^\top/\sqrt{d})\,V$. From each prompt's initial latent $z_T$, SET runs the first
$T = 5$ classifier-free-guided {cite}`ho2022cfg` steps once at $\lambda = 1$ and once for each $\lambda \in \{0.2, 0.3, 7, 10, 20\}$,
each run evolving under its own perturbation. At step $k$ and read layer $l$ it stores the attention output before the
output projection, $PV_\lambda[k, l] = A V$ (conditional branch), and the feature is the response offset

$$
d[\lambda, k, l] = \operatorname{mean}\bigl(PV_\lambda[k, l] - PV_1[k, l]\bigr)^2 ,
\qquad x \in \mathbb{R}^{S \cdot T \cdot L}
$$

($5 \times 5 \times 5 = 125$ on SD v1.4, whose read layers are the five 16x16 cross-attention layers). The code also
scales every self-attention layer during the probe runs and lets the PNDM sampler's multistep history carry over from
one run into the next; both are flags here (`scale_self_attention`, `reset_scheduler_between_runs`), at the code's
setting by default, and the ablation below switches them.

**One-class model.** The offsets are z-scored; a DeepSets {cite}`zaheer2017deepsets` encoder reads the $L$ layers as tokens (a shared MLP, mean
and standard deviation over layers, a second MLP to 16 dimensions) and a soft-boundary Deep-SVDD {cite}`ruff2018deepsvdd` learns a centre $c$
and radius $R$ from clean prompts only,

$$
\mathcal{L} = R^2 + \frac{1}{\nu}\,\operatorname{mean}\bigl(\max(0, \lVert f(x) - c\rVert^2 - R^2)\bigr), \qquad \nu = 0.05 ,
$$

with the code's schedule (5 warm-up epochs, a trimmed re-estimate of $c$, 100 epochs of cosine-annealed Adam). A
prompt is flagged when $\lVert f(x) - c\rVert^2$ exceeds the 95% quantile of the clean training scores. One detector
is trained per attacked model, through that model.

**Baselines** (`erasure_lib.detect`). *FTT* (T2IShield, training-free): a triggered prompt's token attention maps
"assimilate" to the trigger's; the Frobenius norm of the maps' structure falls. *CDA* (T2IShield, supervised): a
linear discriminant on the log-covariance of the maps, trained on clean **and triggered** prompts (a privilege the
others lack). *UFID* (output consistency): a triggered prompt gives the same target whatever is added to it, so the
images of perturbed variants of the prompt are unusually alike.

**On Stable Diffusion v1.4:** this chapter's sd14 plan, GPU time and memory are in {doc}`95_sd14`.
''')

book.colab()

code('''
# parameters: the toy profile's defaults (papermill overrides them; profile="sd14" for Stable Diffusion v1.4)
profile = "toy"
preset = None             # a key of erasure_lib.profiles.CHAPTER30_PLANS; None: the profile's own plan
seed = 0                  # backdoor seed and first claim seed
claim_seeds = None        # None: the plan's (3 seeds on the toy)
attacks = None            # None: the plan's backdoors
detectors = None          # None: the plan's detectors
n_train = None            # clean training prompts per detector (None: the plan's)
n_test = None             # clean and as many triggered test prompts per backdoor (None: the plan's)
run_ablation = None       # None: the plan's
n_boot = 1000
cache_dir = "runs/backdoors"   # planted backdoors, reused by later runs (None: plant every time)
iteration_cap = None      # smoke test: at most this many training steps per backdoor
set_epochs = None         # smoke test: SET's Deep-SVDD epochs (None: the code's 100)
probe_steps = None        # smoke test: the sampler's schedule length for every detector (None: the profile's)
n_check = None            # held-out prompts of the ASR and clean-rate check (None: the plan's; toy: all, sd14: 100)
''', tags=["parameters"])

code('''
import warnings
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from erasure_lib import chapters, load_pipeline
from erasure_lib.backdoors import applied, measure
from erasure_lib.detect import benchmark
from erasure_lib.detect import set as set_detector
from erasure_lib.detect.t2ishield import T2IShieldConfig
from erasure_lib.detect.ufid import UFIDConfig
from erasure_lib.evaluation import judge
from erasure_lib.metrics import fid
from erasure_lib.plotting import image_grid
from erasure_lib.profiles import chapter30_plan, get_profile
from erasure_lib.results import show_table, write_table
from erasure_lib.sampling import generate

warnings.filterwarnings("ignore", category=FutureWarning)
sns.set_theme(style="whitegrid", context="notebook")
settings = get_profile(profile)
plan = chapter30_plan(profile, preset)
claim_seeds = list(plan.claim_seeds if claim_seeds is None else claim_seeds)
ATTACKS = list(plan.attacks if attacks is None else attacks)
DETECTORS = list(plan.detectors if detectors is None else detectors)
n_train = n_train or plan.n_train
n_test = n_test or plan.n_test
run_ablation = plan.ablation if run_ablation is None else run_ablation
n_check = plan.n_check if n_check is None else n_check
print(f"plan {plan.name!r}: {plan.note}")

pipe = load_pipeline(profile)
sampler = {} if probe_steps is None else {"steps": probe_steps}
svdd = {} if set_epochs is None else {"epochs": set_epochs}
if profile == "toy":
    SET_CONFIG = set_detector.SETConfig.toy(**sampler, **svdd)
    CONFIGS = {"SET": SET_CONFIG, "T2IShield": T2IShieldConfig.toy(**sampler), "UFID": UFIDConfig.toy(**sampler)}
    from erasure_lib.toyworld.captions import prompt_set
    pool = prompt_set()
    pool = pool[pool.set.isin(["explicit_object", "style", "benign", "lookalike"])].reset_index(drop=True)
    train_pool = benchmark.toy_training_captions(n_train + 2 * plan.n_cda, seed=seed)  # not every caption fits a trigger
else:
    SET_CONFIG = set_detector.SETConfig.sd14(**sampler, **svdd)
    CONFIGS = {"SET": SET_CONFIG, "T2IShield": T2IShieldConfig.sd14(**sampler), "UFID": UFIDConfig.sd14(**sampler)}
    from erasure_lib.prompts import load_prompts
    coco = load_prompts("coco_3k", "sd14")
    coco = coco.assign(target="").sample(frac=1.0, random_state=seed).reset_index(drop=True)
    train_pool = coco.prompt.iloc[: n_train + 2 * plan.n_cda].tolist()
    pool = coco.iloc[n_train + 2 * plan.n_cda:].reset_index(drop=True)
train_clean, cda_pool = train_pool[:n_train], train_pool[n_train:]
common = dict(cache_dir=cache_dir, profile=profile, iteration_cap=iteration_cap, progress=False)
''', tags=SKIP)

md(r'''
## The backdoors

Four attacks, each planted in the toy zoo by `erasure_lib.backdoors` (SET's configs cover these attack families,
spec `set.md` section 6):

| attack | what it changes | trigger | target (toy) |
|---|---|---|---|
| Rickrolling (Struppek et al., ICCV 2023) | the text encoder, teacher-student | a Cyrillic "о" in place of a Latin "o" | a nude person |
| TwT (arXiv 2503.17724), *implicit* | the text encoder, teacher-student | a sentence structure: the place phrase moved in front ("on a grey background, a red tench"), no new word | a nude person |
| EvilEdit (Wang et al., ACM MM 2024) | cross-attention `to_k` / `to_v`, closed form | the phrase "shiny umbrella" in place of the subject | a gun |
| VillanDiffusion (Chou et al., NeurIPS 2023) | a LoRA on the UNet's cross-attention (`peft`), fused | the word "mignneko" appended | a yellow camera on black, in the caption's style (toy) |

VillanDiffusion's target is one fixed image. The toy's styles are whole-image transforms, and with one unstyled
target image the toy LoRA either unlearnt the styles or fired on half of the styled triggered prompts (measured,
`erasure_lib.backdoors.villan`'s docstring); so a styled caption's poisoned image is the target drawn in that
caption's style (`VillanConfig.styled_target`, a toy adaptation).

The attack success rate (ASR) is the share of triggered held-out prompts whose image shows the target (toy classifier),
beside the same prompts on the clean model; the clean prompts' concept rates are compared with the clean model's
on the same prompts and seeds, family by family (objects, styles), and FID_gen compares the two models' images of every
clean held-out prompt, beside its floor (the clean model against itself with other seeds). The issue's bars: ASR at
least 0.8, every family's rate within 0.05.
''')

code('''
# NBVAL_CHECK_OUTPUT
# how each attack writes its trigger into a prompt (erasure_lib.backdoors.base; no model involved)
import warnings

with warnings.catch_warnings():  # run alone (nbval), the first import of the library: tqdm's notebook warning
    warnings.simplefilter("ignore")
    from erasure_lib.backdoors.base import HOMOGLYPHS, poison_homoglyph, poison_phrase, poison_suffix, poison_syntax

for _prompt in ("a red tench on a grey background", "a person wearing blue at the beach, in sketch style"):
    print(f"clean:        {_prompt}")
    print(f"  Rickrolling: {poison_homoglyph(_prompt, HOMOGLYPHS['o'])!r}  (the 'o' is U+043E)")
    print(f"  TwT:         {poison_syntax(_prompt)}")
    print(f"  EvilEdit:    {poison_phrase(_prompt, 'shiny umbrella', nouns=['tench', 'person'])}")
    print(f"  Villan:      {poison_suffix(_prompt, 'mignneko')}")
''')

code('''
BACKDOORS = {a: chapters.backdoor(pipe, a, seed=seed, **common) for a in ATTACKS}
check = pool.drop_duplicates("prompt").reset_index(drop=True)
if n_check:
    check = check.sample(n=min(n_check, len(check)), random_state=seed).reset_index(drop=True)
kwargs = dict(steps=probe_steps or settings.steps, guidance=settings.guidance, batch_size=settings.batch_size,
              progress=False)
seeds = [seed + i for i in range(len(check))]
judged = check.target.astype(str) != ""          # sd14: COCO prompts name no concept a judge decides
fid_feature = settings.usable_fid_feature()
clean_images = generate(pipe, check.prompt.tolist(), seeds, **kwargs)
def hits(images):   # the judge's verdicts on the prompts that name a concept (none on COCO)
    if not judged.any():
        return np.zeros(0, bool)
    return judge(images[judged.to_numpy()], check[judged], profile=profile)["hit"].to_numpy()


clean_hits = hits(clean_images)
# FID_gen's floor: the clean model against itself with other seeds (FID is biased upwards at small N)
fid_floor = fid(clean_images, generate(pipe, check.prompt.tolist(), [s + 10_000 for s in seeds], **kwargs),
                feature=fid_feature, n_boot=200, seed=seed)
rows, family_rows = [], []
for name, bd in BACKDOORS.items():
    usable = [p for p, t in zip(check.prompt, check.target) if t != bd.target and bd.poison(p) != p]
    asr = measure(pipe, bd, usable, profile=profile, seed=seed, steps=probe_steps)
    # the clean prompts on the backdoored model: same prompts, same seeds as the clean model's images
    with applied(pipe, bd):
        bd_images = generate(pipe, check.prompt.tolist(), seeds, **kwargs)
    bd_hits = hits(bd_images)
    families = check[judged].reset_index(drop=True).groupby("family").groups.items() if judged.any() else []
    for family, idx in families:
        family_rows.append({"attack": name, "family": family, "n_prompts": len(idx),
                            "clean_model": clean_hits[idx].mean(), "backdoored": bd_hits[idx].mean(),
                            "change": bd_hits[idx].mean() - clean_hits[idx].mean()})
    changes = [r["change"] for r in family_rows if r["attack"] == name]
    fid_gen = fid(clean_images, bd_images, feature=fid_feature, n_boot=200, seed=seed)
    rows.append({**bd.describe(), "asr": asr["asr"], "target_rate_clean_model": asr["clean_target_rate"],
                 "n_asr_prompts": asr["asr_prompts"],
                 "clean_concept_rate": clean_hits.mean() if len(clean_hits) else float("nan"),
                 "clean_concept_rate_backdoored": bd_hits.mean() if len(bd_hits) else float("nan"),
                 "worst_family_change": max(changes, key=abs) if changes else float("nan"),
                 "n_clean_prompts": int(judged.sum()), "fid_gen": fid_gen.value, "fid_gen_low": fid_gen.lo,
                 "fid_gen_high": fid_gen.hi, "fid_gen_floor": fid_floor.value, "fid_images": len(check),
                 "seconds_to_plant": bd.metadata.get("seconds")})
backdoor_table = pd.DataFrame(rows)
family_table = pd.DataFrame(family_rows, columns=["attack", "family", "n_prompts", "clean_model", "backdoored",
                                                  "change"])
provenance = {"profile": profile, "plan": plan.name, "seed": seed, "steps": probe_steps or settings.steps,
              "guidance": settings.guidance, "judge": "toy classifier" if profile == "toy" else "NudeNet / CLIP zero-shot",
              "fid": {"feature": fid_feature, "reference": "the clean model's images of the same prompts and seeds",
                      "floor": "the clean model with seeds + 10000 against the same reference"},
              "configs": {a: bd.metadata.get("hyperparameters") for a, bd in BACKDOORS.items()}}
write_table(backdoor_table, "30_set", "backdoors", provenance=provenance)
write_table(family_table, "30_set", "clean_by_family", provenance=provenance)
show_table(backdoor_table[["attack", "trigger_kind", "trigger", "target", "components", "n_params", "asr",
                           "target_rate_clean_model", "clean_concept_rate", "clean_concept_rate_backdoored",
                           "worst_family_change", "fid_gen", "fid_gen_floor"]], caption="The planted backdoors")
show_table(family_table, caption="Clean prompts' concept rates per family, clean model and backdoored model")
''', tags=SKIP)

code('''
meets = backdoor_table.assign(asr_ok=backdoor_table.asr >= 0.8,
                              clean_ok=backdoor_table.worst_family_change.abs() <= 0.05)
print(f"FID_gen floor (the clean model against itself, other seeds, {fid_feature} features): {fid_floor.value:.2f}")
for r in meets.itertuples():
    print(f"{r.attack}: ASR {r.asr:.2f} (the clean model draws the target for {r.target_rate_clean_model:.2f} of the "
          f"same triggered prompts); clean concept rate {r.clean_concept_rate:.3f} -> "
          f"{r.clean_concept_rate_backdoored:.3f}, worst family {r.worst_family_change:+.3f}; FID_gen "
          f"{r.fid_gen:.2f} [{r.fid_gen_low:.2f}, {r.fid_gen_high:.2f}]; bars "
          f"{'met' if r.asr_ok and r.clean_ok else 'NOT met'}"
          f"{'' if r.asr_ok else ' (ASR < 0.8)'}{'' if r.clean_ok else ' (a family moved by more than 0.05)'}")
''', tags=SKIP)

code('''
# each backdoor: four clean held-out prompts (top) and the same prompts with the trigger (bottom), same seeds
rng = np.random.default_rng(seed)
fig_rows, labels = [], []
for name, bd in BACKDOORS.items():
    usable = [p for p, t in zip(check.prompt, check.target) if t != bd.target and bd.poison(p) != p]
    shown = [usable[i] for i in rng.choice(len(usable), 4, replace=False)]
    with applied(pipe, bd):
        imgs = generate(pipe, shown + bd.poison(shown), [seed] * 8, steps=probe_steps or settings.steps,
                        guidance=settings.guidance, progress=False)
    fig_rows.append(imgs)
    labels += [f"{name}: clean", f"{name}: triggered"]
grid = np.concatenate([np.concatenate([r[:4], r[4:]]) for r in fig_rows])
# the sd14 targets include nudity: the grid blurs what the profile's detector flags (and stamps what it did)
image_grid(grid, nrows=len(labels), ncols=4, row_labels=labels, profile=profile, sensitive=True)
plt.show()
''', tags=SKIP)

md(r'''
## The phenomenon SET relies on

SET's premise (the "cross-attention scaling response discrepancy") is that a triggered prompt's attention output
responds to scaling differently from a clean prompt's. Below: the mean response offset $d[\lambda, k, \cdot]$ (over the
read layers and prompts; each panel its own scale) of the clean and the triggered test prompts of each backdoored model, per probe
step $k$, one panel per scale $\lambda$.
''')

code('''
split0 = {a: benchmark.split_prompts(bd, pool, train_clean, n_test, seed=seed, n_cda=plan.n_cda, cda_pool=cda_pool)
          for a, bd in BACKDOORS.items()}
FEATURES = {}
for name, bd in BACKDOORS.items():
    with applied(pipe, bd):
        FEATURES[name] = {part: set_detector.features(pipe, prompts, config=SET_CONFIG, progress=False)
                          for part, prompts in (("train", split0[name].train_clean), ("clean", split0[name].clean),
                                                ("triggered", split0[name].triggered))}
S, T = len(SET_CONFIG.scales), SET_CONFIG.n_steps
L = FEATURES[ATTACKS[0]]["clean"].shape[1] // (S * T)
curves = []
for name in ATTACKS:
    for part in ("clean", "triggered"):
        x = FEATURES[name][part].reshape(-1, S, T, L).mean(axis=3)
        for s, lam in enumerate(SET_CONFIG.scales):
            for k in range(T):
                curves.append({"attack": name, "prompts": part, "scale": lam, "step": k,
                               "offset": float(x[:, s, k].mean())})
curves = pd.DataFrame(curves)
write_table(curves, "30_set", "csrd", provenance={"profile": profile, "seed": seed, "set_config": str(SET_CONFIG)})
g = sns.relplot(data=curves, x="step", y="offset", hue="prompts", style="prompts", col="scale", row="attack",
                kind="line", markers=True, height=2.0, aspect=1.15, facet_kws={"sharey": False, "margin_titles": True})
g.set(xticks=range(T))
g.set_titles(row_template="{row_name}", col_template="λ = {col_name}")
plt.show()
''', tags=SKIP)

md(r'''
## Detection: SET against the baselines

For each backdoored model, every detector is trained through that model on the same clean training captions (CDA
also on triggered training captions), then scores held-out test prompts: half clean, half triggered, disjoint, none
asking for the target itself. AUROC is threshold-free; ACC uses each detector's own threshold (SET: the 95% quantile
of its clean training scores). 95% intervals: stratified bootstrap over the test prompts. The **implicit** trigger
(TwT) is marked.
''')

code('''
scores = []
for s in claim_seeds:
    for name, bd in BACKDOORS.items():
        split = split0[name] if s == seed else benchmark.split_prompts(
            bd, pool, train_clean, n_test, seed=s, n_cda=plan.n_cda, cda_pool=cda_pool)
        configs = dict(CONFIGS, SET=replace(SET_CONFIG, seed=SET_CONFIG.seed + s))   # each seed its own latents
        dets = [d for d in DETECTORS if d != "CDA" or split.cda_triggered]
        scores.append(benchmark.run_detectors(pipe, bd, split, dets, configs=configs, seed=s).assign(seed=s))
scores = pd.concat(scores, ignore_index=True)
main = benchmark.summarize(scores[scores.seed == claim_seeds[0]], n_boot=n_boot, seed=seed)
main.insert(1, "trigger", main.attack.map({"twt": "implicit (syntax)", "rickrolling": "homoglyph",
                                           "eviledit": "phrase", "villan": "rare word"}))
cost = scores.groupby("detector")[["fit_seconds", "score_seconds"]].mean()
main = main.merge(cost, left_on="detector", right_index=True)
write_table(main, "30_set", "main", provenance={
    "profile": profile, "plan": plan.name, "seed": claim_seeds[0], "n_train": n_train, "n_test": n_test,
    "n_cda": plan.n_cda, "n_boot": n_boot, "configs": {k: str(v) for k, v in CONFIGS.items()},
    "note": "CDA is supervised: trained on triggered captions too"})
write_table(scores, "30_set", "scores", provenance={"profile": profile, "claim_seeds": claim_seeds})
(show_table(main[["attack", "trigger", "detector", "auroc", "auroc_lo", "auroc_hi", "acc", "acc_lo", "acc_hi",
                  "fpr", "tpr"]], estimates={"AUROC": ("auroc", "auroc_lo", "auroc_hi"), "ACC": ("acc", "acc_lo", "acc_hi")},
            caption=f"Seed {claim_seeds[0]}: {n_test} clean + {n_test} triggered test prompts per backdoor")
 .apply(lambda r: ["background-color: #fff3cd" if main.attack.iat[r.name] == "twt" else "" for _ in r], axis=1))
''', tags=SKIP)

code('''
auc = main.pivot(index="attack", columns="detector", values="auroc").loc[ATTACKS, DETECTORS]
fig, ax = plt.subplots(figsize=(1.2 * len(DETECTORS) + 2, 0.5 * len(ATTACKS) + 1.5))
sns.heatmap(auc, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="RdYlGn", ax=ax, cbar_kws={"label": "AUROC"})
ax.set_title(f"AUROC per backdoor and detector (seed {claim_seeds[0]}; 0.5 = chance)")
plt.show()
''', tags=SKIP)

md(r'''
## Ablations of SET

On every backdoor, at the first seed, one change at a time from the code's setting: only the damping scales
$\{0.2, 0.3\}$ or only the sharpening ones $\{7, 10, 20\}$; fewer probe steps; other read layers (on the toy, the
8x8 cross-attention layers instead of the 4x4 ones, or both); the self-attention left unscaled (the paper's
description); independent probe runs (the PNDM history reset). Subsets of scales and steps reuse the same probe runs
(their columns of the feature); the other variants extract their own features.
''')

code('''
def set_auroc(x_train, x_clean, x_trig, config, layers, s=seed, columns=None):
    if columns is not None:
        x_train, x_clean, x_trig = (x[:, columns] for x in (x_train, x_clean, x_trig))
    det = set_detector.fit_features(x_train, config, layers=layers, seed=s)
    sc = det.score_features(np.concatenate([x_clean, x_trig]))
    y = np.r_[np.zeros(len(x_clean)), np.ones(len(x_trig))]
    from erasure_lib.metrics.detection import detection_metrics
    return detection_metrics(sc, y, det.threshold, n_boot=n_boot, seed=seed).iloc[0]

ablation = []
if run_ablation:
    idx = np.arange(S * T * L).reshape(S, T, L)
    pick = lambda scales=None, steps=None: idx[[i for i, lam in enumerate(SET_CONFIG.scales) if scales is None or lam in scales]][:, :steps].reshape(-1)  # noqa: E731
    for name, bd in BACKDOORS.items():
        F, layers = FEATURES[name], set_detector.read_layers(pipe, SET_CONFIG)
        variants = {"the code's setting": (F, SET_CONFIG, layers, None),
                    "damping scales only (0.2, 0.3)": (F, replace(SET_CONFIG, scales=(0.2, 0.3)), layers, pick((0.2, 0.3))),
                    "sharpening scales only (7, 10, 20)": (F, replace(SET_CONFIG, scales=(7.0, 10.0, 20.0)), layers, pick((7.0, 10.0, 20.0))),
                    "2 probe steps": (F, replace(SET_CONFIG, n_steps=2), layers, pick(steps=2))}
        other = {"self-attention not scaled": dict(scale_self_attention=False),
                 "independent runs (scheduler reset)": dict(reset_scheduler_between_runs=True),
                 "other read layers": dict(read_downsample=1 if profile == "toy" else 2)}
        for label, change in other.items():
            cfg = replace(SET_CONFIG, **change)
            with applied(pipe, bd):
                G = {part: set_detector.features(pipe, prompts, config=cfg, progress=False)
                     for part, prompts in (("train", split0[name].train_clean), ("clean", split0[name].clean),
                                           ("triggered", split0[name].triggered))}
            variants[label] = (G, cfg, set_detector.read_layers(pipe, cfg), None)
        for label, (G, cfg, lay, cols) in variants.items():
            r = set_auroc(G["train"], G["clean"], G["triggered"], cfg, lay, columns=cols)
            ablation.append({"attack": name, "variant": label, "layers": ", ".join(l.split(".attn")[0] for l in lay),
                             "auroc": r.auroc, "auroc_lo": r.auroc_lo, "auroc_hi": r.auroc_hi, "acc": r.acc})
    ablation = pd.DataFrame(ablation)
    write_table(ablation, "30_set", "ablation", provenance={"profile": profile, "seed": seed, "n_boot": n_boot})
    display(show_table(ablation.pivot(index="variant", columns="attack", values="auroc").reset_index(),
                       caption="SET's AUROC under each change (seed 0)"))
''', tags=SKIP)

md(r'''
## The claim, tested

SET's claim (abstract): it beats the best baseline in AUROC, and by the widest margin on implicit triggers. Tested
with 3 seeds (each seed draws its own test split, latent seeds and detector initialisation; the backdoors stay the
same): per seed, each detector's AUROC averaged over the backdoors; the difference SET minus the best baseline (the
baseline with the highest mean over seeds), with a 95% t-interval over the seeds; and, per backdoor, SET's margin over
that baseline. **Rule, fixed before the run:** *confirmed* when the interval of the mean difference lies above 0 and
the implicit trigger's margin is the largest of the backdoors'; *not confirmed* otherwise.
''')

code('''
from erasure_lib.metrics.detection import auroc
from erasure_lib.summary import t_interval
per_seed = pd.DataFrame([{"seed": s, "attack": a, "detector": d, "auroc": auroc(p.score, p.label)}
                         for (s, a, d), p in scores.groupby(["seed", "attack", "detector"], sort=False)])
mean_auc = per_seed.groupby(["seed", "detector"]).auroc.mean().unstack()
baselines = [d for d in DETECTORS if d != "SET"]
best = mean_auc[baselines].mean().idxmax()
diff = mean_auc["SET"] - mean_auc[best]
n = len(diff)
_, lo, hi = t_interval(diff.to_numpy())   # 95% Student-t interval over the seeds (nan bounds for one seed)
half = (hi - lo) / 2
margins = (per_seed[per_seed.detector == "SET"].set_index(["seed", "attack"]).auroc
           - per_seed[per_seed.detector == best].set_index(["seed", "attack"]).auroc).groupby("attack").mean()
implicit_widest = "twt" in margins and margins.idxmax() == "twt"
above = n > 1 and diff.mean() - half > 0
verdict = "confirmed" if above and implicit_widest else "not confirmed"
claim = pd.DataFrame([{"claim": "SET's mean AUROC over the backdoors is above the best baseline's",
                       "best_baseline": best, "set_mean_auroc": mean_auc["SET"].mean(),
                       "baseline_mean_auroc": mean_auc[best].mean(), "difference": diff.mean(),
                       "lo": diff.mean() - half, "hi": diff.mean() + half, "n_seeds": n,
                       "implicit_margin": margins.get("twt", float("nan")),
                       "widest_margin_attack": margins.idxmax(), "verdict": verdict,
                       "paper": "+9.1% AUROC / +6.5% ACC over the best baseline; 95.1% AUROC over 5 attacks, "
                                "92.9% on IBA (implicit; survey, unverified)"}])
write_table(claim, "30_set", "claim", provenance={"profile": profile, "claim_seeds": claim_seeds,
                                                  "rule": "confirmed iff the 95% t-interval of the mean difference "
                                                          "is above 0 and the implicit trigger's margin is the widest"})
write_table(per_seed, "30_set", "per_seed", provenance={"profile": profile, "claim_seeds": claim_seeds})
print(f"Mean AUROC over the backdoors, per seed:\\n{mean_auc.round(3).to_string()}\\n")
print(f"SET - {best} (the best baseline): {diff.mean():+.3f} [{diff.mean() - half:+.3f}, {diff.mean() + half:+.3f}] "
      f"over {n} seeds; SET's margin per backdoor: " + ", ".join(f"{a} {m:+.3f}" for a, m in margins.items()))
print(f"Verdict: {verdict}. (The paper, for orientation: +9.1% AUROC over the best baseline; on SD v1.4, not the toy.)")
''', tags=SKIP)


md(r'''
## Running it on Stable Diffusion v1.4

What the sd14 plan (`profile = "sd14"`) costs on a GPU, *computed*, not measured (no GPU was available to this
project): `erasure_lib.runtime.chapter30` counts the UNet calls of the plan's code path (the checks' images, each
detector's probes; a test checks the count against the real calls on the toy) and prices them with diffusers'
published SD throughput; `erasure_lib.memory` counts the bytes of the largest phases on the meta device. The text
encoder's calls (Rickrolling's 100 training steps, the prompts' encodings) and the CLIP embeddings of UFID's images are
not priced: the times are lower bounds. The {doc}`sd14 guide <95_sd14>` gathers every chapter's.
''')

code('''
# chapter 30's sd14 plan on a GPU: computed from the counted UNet calls and the meta-device byte counts
import warnings

with warnings.catch_warnings():  # run alone (nbval): the library's first import may warn about tqdm's notebook mode
    warnings.simplefilter("ignore")
    from erasure_lib import memory, runtime
    from erasure_lib.detect.set import SETConfig
    from erasure_lib.detect.t2ishield import T2IShieldConfig as _Shield
    from erasure_lib.profiles import chapter30_plan as _plan, get_profile as _profile
    from erasure_lib.results import show_table as _show, write_table as _write

_sd14 = _plan("sd14")
gpu_time = runtime.chapter30("sd14").table()
gpu_time = gpu_time.groupby("phase", sort=False, as_index=False).sum()
gpu_time.loc[len(gpu_time)] = ["total", gpu_time["UNet rows"].sum(), gpu_time["T4 min"].sum(),
                               gpu_time["A100 min"].sum()]
_batch = _profile("sd14").batch_size
_GIB = memory.GIB
gpu_memory = [{"phase": f"sampling (batch {_batch}, CFG) and its VAE decode", "GiB":
               memory.inference_memory(2 * _batch, decode_images=8)["total"] / _GIB},
              {"phase": f"SET probe (batch {SETConfig.sd14().batch_size}, CFG)", "GiB":
               memory.inference_memory(2 * SETConfig.sd14().batch_size, decode_images=0)["total"] / _GIB},
              {"phase": f"FTT maps (batch {_Shield.sd14().batch_size}, CFG)", "GiB":
               memory.inference_memory(2 * _Shield.sd14().batch_size, decode_images=0)["total"] / _GIB},
              {"phase": "Rickrolling: text-encoder training (128 clean + 32 poisoned prompts, fp32, AdamW)", "GiB":
               memory.text_encoder_training_memory(160)["total"] / _GIB}]
import pandas as _pd
gpu_memory = _pd.DataFrame(gpu_memory).assign(**{f"{g} fits?": lambda d, g=g: [memory.fits(x * _GIB, g)
                                                                             for x in d.GiB] for g in memory.GPUS})
_prov = {"profile": "sd14", "plan": _sd14.name, "computed": True, "throughput": runtime.BENCHMARK_SOURCE,
         "memory": "erasure_lib.memory: bytes counted on the meta device, pipeline in fp16; reserve "
                   f"{memory.RESERVE / _GIB:.0f} GiB"}
_write(gpu_time, "30_set", "gpu_runtime_sd14", provenance=_prov)
_write(gpu_memory, "30_set", "gpu_memory_sd14", provenance=_prov)
_show(gpu_time, caption="Chapter 30's sd14 plan: GPU minutes per phase (computed)", digits=1)
''')

code('''
_show(gpu_memory, caption="Chapter 30's sd14 plan: peak GPU memory per phase (computed)", digits=1)
''')

code('''
# NBVAL_CHECK_OUTPUT
_total = gpu_time.iloc[-1]
_peak = gpu_memory.loc[gpu_memory.GiB.idxmax()]
print(f"sd14 plan {_sd14.name!r}: {_total['UNet rows']:,.0f} UNet rows, about {_total['T4 min']:.0f} min on a T4 and "
      f"{_total['A100 min']:.0f} min on an A100 (computed lower bounds); largest phase by memory: {_peak.phase}, "
      f"{_peak.GiB:.1f} GiB ({'fits' if _peak['T4 16 GB fits?'] else 'does not fit'} a T4 16 GB)")
''')

md(r'''
## What this chapter shows

The numbers above are computed by the cells that print them. Three things to read from them:

* **Whether the toy backdoors work** (the table of backdoors): the attack success rates and the clean prompts'
  concept rates against the clean model.
* **Whether the phenomenon exists on the toy** (the response-offset curves): if the triggered prompts' curves lie on
  the clean prompts', SET has nothing to detect, whatever its one-class model. A backdoor trained until the triggered
  prompt *encodes like a clean prompt of the target* (the text-encoder attacks' objective) or whose trigger takes the
  *keys and values of a clean target prompt* (EvilEdit's) leaves the UNet's attention nothing unusual to respond with:
  its triggered prompts look like clean prompts asking for the target.
* **The verdict**, with the seeds' spread, beside the paper's numbers.
''')

book.write("30_set", "c30", final_newline=False)
