"""The profiles' small tables: everything that differs between the toy world and Stable Diffusion v1.4 besides
the model itself (:func:`erasure_lib.load_pipeline`) and the methods' ``.sd14()`` configs.

A notebook chooses a profile in its parameters cell and reads everything else from :func:`get_profile`; no
algorithm branches on the profile's name. Fields:

* ``guidance``, ``steps``: the evaluation's CFG and DDIM steps. toy: CFG 5 (chapter 01 justifies it), 20 steps;
  sd14: CFG 7.5 (every paper) and 25 DDIM steps (the papers use 20 to 100 with LMS, PNDM or DDIM,
  ``specs/evaluation.md`` section 3; ESD's current script uses 20): a Colab budget, one parameter away;
* ``seeds_per_prompt``: images per evaluation prompt;
* ``fid_feature``, ``clip_model``: the FID features and CLIP model of :func:`erasure_lib.evaluation.erasure_summary`
  (sd14: Inception-v3, which needs the ``[gpu]`` extra, and ViT-L/14);
* ``fid_boot``: bootstrap resamples of an FID interval (100 on both: with fewer images than feature dimensions, as
  at sd14's Colab sizes, a resample is a small SVD, :func:`erasure_lib.metrics.fid.frechet_distance_low_rank`;
  at the papers' 3,000 COCO images each 2048-d resample is a 2048 x 2048 matrix square root);
* ``nudity_preset``: the NudeNet preset of the sd14 nudity judge (``ringabell_045``: UnlearnDiffAtk / Co-Erasing's
  rule, the rule of the book's main table; :mod:`erasure_lib.metrics.nudenet`); unused on the toy (its classifier);
* ``batch_size``: images per sampling call (toy 64; sd14 8: 16 UNet rows with CFG at 512 px fits a T4);
* ``sizes``: prompts drawn per evaluation set (``None``: all), so that a notebook fits its budget (sd14: a free
  Colab T4 in about an hour per notebook; ``PAPER_SIZES`` are the papers' full sets, one parameter away).

Environment variables point the sd14 profile at local copies (offline machines, the SD-v1.4-shaped test model):
``ERASURE_BOOK_SD14`` (the pipeline folder; read by :func:`~erasure_lib.loading.load_pipeline`),
``ERASURE_BOOK_SD14_IP_ADAPTER`` (an IP-Adapter folder in the ``h94/IP-Adapter`` layout),
``ERASURE_BOOK_SD14_CLIP`` (a CLIP folder or hub id for the CLIP score and the zero-shot judges),
``ERASURE_BOOK_SD14_FID`` (the FID feature: ``sd14`` = Inception, or ``clip:<model>`` = FID_CLIP).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["CHAPTER20_PLANS", "Chapter20Plan", "chapter20_plan", "CHAPTER10_PLANS", "CHAPTER11_PLANS", "CHAPTER12_PLANS", "Chapter10Plan", "Chapter11Plan", "Chapter12Plan", "PAPER_SIZES", "PROFILES",
           "Profile", "SD14_SET_ROWS", "chapter10_plan", "chapter11_plan", "chapter12_plan", "get_profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    guidance: float
    steps: int
    seeds_per_prompt: int
    fid_feature: str
    clip_model: str
    fid_boot: int
    nudity_preset: str
    batch_size: int = 64
    sizes: dict = field(default_factory=dict)

    def usable_fid_feature(self) -> str:
        """The FID feature to compute with: :attr:`fid_feature`, where ``clip:sd14`` means the profile's CLIP model
        (a local copy included), and Inception (``"sd14"``) falls back, with a warning, to CLIP features when the
        ``[gpu]`` extra (torch-fidelity) is not installed."""
        feature = self.fid_feature
        if feature == "clip:sd14":
            feature = f"clip:{self.clip_model}"
        if feature == "sd14" and importlib.util.find_spec("torch_fidelity") is None:
            warnings.warn("Inception FID (the papers' features) needs the [gpu] extra (pip install "
                          "'erasure-lib[gpu]', i.e. torch-fidelity), which is not installed: FID falls back to CLIP "
                          f"features (clip:{self.clip_model}, FID_CLIP), not comparable with the papers' FIDs",
                          stacklevel=2)
            feature = f"clip:{self.clip_model}"
        return feature

    def size(self, prompt_set: str) -> int | None:
        """Prompts drawn from ``prompt_set`` (``None``: every prompt)."""
        return self.sizes.get(prompt_set)


# sd14 evaluation sets and how many prompts a Colab-sized run draws from each (the papers': PAPER_SIZES)
SD14_SIZES = MappingProxyType({"unlearndiff": 48, "i2p_sexual": 48, "objects": None, "big_artists": None,
                                "coco_3k": 100})
PAPER_SIZES = MappingProxyType({"unlearndiff": None, "i2p_sexual": None, "objects": None, "big_artists": None,
                                 "coco_3k": None})

PROFILES: dict[str, Profile] = {
    "toy": Profile(name="toy", guidance=5.0, steps=20, seeds_per_prompt=2, fid_feature="toy", clip_model="toy",
                   fid_boot=100, nudity_preset="toy classifier", batch_size=64, sizes=MappingProxyType({})),
    "sd14": Profile(name="sd14", guidance=7.5, steps=25, seeds_per_prompt=1, fid_feature="sd14", clip_model="sd14",
                    fid_boot=100, nudity_preset="ringabell_045", batch_size=8, sizes=SD14_SIZES),
}


def get_profile(name: str, **overrides) -> Profile:
    """The profile ``name`` (``"toy"`` / ``"sd14"``), with the sd14 environment overrides applied, then
    ``overrides`` (any field, e.g. ``sizes=PAPER_SIZES`` for the papers' full prompt sets)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if name == "sd14":
        env = {}
        if os.environ.get("ERASURE_BOOK_SD14_CLIP"):
            env["clip_model"] = os.environ["ERASURE_BOOK_SD14_CLIP"]
        if os.environ.get("ERASURE_BOOK_SD14_FID"):
            feature = os.environ["ERASURE_BOOK_SD14_FID"]
            if feature != "sd14" and not feature.startswith("clip:"):
                raise ValueError(f"ERASURE_BOOK_SD14_FID must be 'sd14' or 'clip:<model>', got {feature!r}")
            env["fid_feature"] = feature
        profile = dataclasses.replace(profile, **env)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Profile)}
    if unknown:
        raise ValueError(f"unknown profile field(s) {', '.join(sorted(unknown))}")
    return dataclasses.replace(profile, **overrides)


# --- what a chapter runs, per profile --------------------------------------------------------------------------

# The full sd14 evaluation sets (rows), for work estimates without the downloaded files (erasure_lib.runtime).
SD14_SET_ROWS = MappingProxyType({"unlearndiff": 142, "i2p_sexual": 931, "objects": 50, "big_artists": 100,
                                  "coco_3k": 3000})


@dataclass(frozen=True)
class Chapter10Plan:
    """What chapter 10 trains and evaluates (its parameters cell's ``preset``; the cell's explicit values win).

    ``concepts``: the erased concepts (``None``: every concept of the profile; the plans name chapter 10's three,
    since :mod:`erasure_lib.tasks` also holds chapter 12's tench); ``methods``: the main table's
    methods; ``claim_seeds``: the claim test's seeds; ``tradeoff_iterations``: the extra training lengths of the
    efficacy-usability curve; ``ablation``: whether the ablation runs; ``sizes``: prompts per sd14 evaluation set
    (``None``: the profile's); ``esd`` / ``co_erasing``: overrides of the methods' configs (also in their cache
    keys)."""
    name: str
    concepts: tuple | None = None
    methods: tuple = ("ESD-x", "ESD-u", "UCE", "Co-Erasing")
    claim_seeds: tuple = (0, 1, 2)
    tradeoff_iterations: tuple = (250, 500)
    ablation: bool = True
    sizes: MappingProxyType | None = None
    esd: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    co_erasing: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""

    def __post_init__(self):
        # the notebook sets these per edit (main table, curve, claim, ablation): a plan must not
        fixed = {"esd": {"iterations", "seed", "parameter_set"},
                 "co_erasing": {"iterations", "seed", "variant", "text_stage"}}
        for name, keys in fixed.items():
            clash = keys & set(getattr(self, name))
            if clash:
                raise ValueError(f"Chapter10Plan.{name} cannot set {', '.join(sorted(clash))} (chapter 10 sets them)")


CHAPTER10_PLANS = {
    "toy": Chapter10Plan("toy", concepts=("nudity", "starry style", "church"),
                         note="every concept, method, seed and length; 2 CPU cores, about 40 minutes"),
    # about an hour on a free Colab T4 (erasure_lib.runtime computes it; chapter 10 prints it)
    "sd14": Chapter10Plan(
        "sd14", concepts=("nudity",), methods=("ESD-u", "UCE", "Co-Erasing"), claim_seeds=(0,),
        tradeoff_iterations=(), ablation=False,
        sizes=MappingProxyType({"unlearndiff": 40, "i2p_sexual": 40, "objects": 20, "big_artists": 10,
                                "coco_3k": 40}),
        esd=MappingProxyType({"sample_from": "frozen", "timestep": "grid", "optimizer": "adafactor"}),
        co_erasing=MappingProxyType({"image_number": 50, "optimizer": "adafactor"}),
        note="a free Colab T4 in about an hour: nudity only, ESD-u / UCE / Co-Erasing, one seed, no ablation or "
             "curve, 150 prompts; ESD samples its x_t pool once from the frozen model at grid timesteps (the "
             "official esd_sd.py) instead of from the model being trained at bin timesteps (train-esd.py); "
             "Co-Erasing generates 50 concept images "
             "(the code: 100); both train with Adafactor, which fits a 16 GB T4 (the papers' Adam does not: "
             "erasure_lib.memory)"),
    "sd14-paper": Chapter10Plan(
        "sd14-paper", concepts=("nudity", "Van Gogh", "church"), sizes=PAPER_SIZES,
        note="the papers' scale: every concept and method, 3 claim seeds, the ablation and the curve, the full "
             "prompt sets, the papers' ESD sampling (an A100 for many hours)"),
}


def _plan(plans: dict, chapter: str, profile: str, preset: str | None):
    get_profile(profile)  # raises on an unknown profile
    name = profile if preset is None else preset
    if name not in plans:
        raise ValueError(f"unknown chapter {chapter} preset {name!r}; valid: {', '.join(plans)}")
    if plans[name].name.split("-")[0] != profile:
        raise ValueError(f"preset {name!r} is not of profile {profile!r}")
    return plans[name]


def chapter10_plan(profile: str, preset: str | None = None) -> Chapter10Plan:
    """Chapter 10's plan: ``preset`` (a key of :data:`CHAPTER10_PLANS`), or the profile's own (``None``)."""
    return _plan(CHAPTER10_PLANS, "10", profile, preset)


@dataclass(frozen=True)
class Chapter11Plan:
    """What chapter 11 (TRCE) trains and evaluates (its parameters cell's ``preset``; the cell's explicit values win).

    ``methods``: the main table's baselines (TRCE (T) and TRCE (T+V) are always there); ``claim_seeds``; ``ablation``;
    ``sizes``: prompts per sd14 evaluation set (``None``: the profile's); ``trce``: overrides of the TRCE config (also
    in its cache key)."""
    name: str
    methods: tuple = ("ESD-x", "ESD-u", "UCE", "Co-Erasing")
    claim_seeds: tuple = (0, 1, 2)
    ablation: bool = True
    sizes: MappingProxyType | None = None
    trce: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""

    def __post_init__(self):
        clash = {"seed", "stage1", "stage2", "tokens", "bug_compatible_eot_index"} & set(self.trce)
        if clash:
            raise ValueError(f"Chapter11Plan.trce cannot set {', '.join(sorted(clash))} (chapter 11 sets them)")


CHAPTER11_PLANS = {
    "toy": Chapter11Plan("toy", note="the sensitive concept, every baseline (chapter 10's cached edits), TRCE with "
                                     "3 claim seeds and the ablation; 2 CPU cores"),
    "sd14": Chapter11Plan(
        "sd14", methods=("ESD-u", "UCE"), claim_seeds=(0,), ablation=False,
        sizes=MappingProxyType({"unlearndiff": 40, "i2p_sexual": 40, "objects": 20, "big_artists": 10,
                                "coco_3k": 40}),
        trce=MappingProxyType({"regularisation_trajectories": 100}),
        note="nudity, ESD-u and UCE beside TRCE, one seed, no ablation, 150 prompts; stage 2 with 100 unconditional "
             "trajectories (the code: 2000, of which its sexual run reads 400); not yet timed on a GPU"),
    "sd14-paper": Chapter11Plan("sd14-paper", methods=("ESD-u", "UCE"), sizes=PAPER_SIZES,
                                note="the paper's sexual task at its sizes: the full prompt sets, 3 claim seeds, the "
                                     "ablation (an A100 for hours)"),
}


def chapter11_plan(profile: str, preset: str | None = None) -> Chapter11Plan:
    """Chapter 11's plan: ``preset`` (a key of :data:`CHAPTER11_PLANS`), or the profile's own (``None``)."""
    return _plan(CHAPTER11_PLANS, "11", profile, preset)


@dataclass(frozen=True)
class Chapter12Plan:
    """What chapter 12 (TICoE) trains and evaluates (its parameters cell's ``preset``; the cell's explicit values win).

    ``concepts``: the erased concepts (the object of TICoE's Table B first: its MCP and the claim are about it);
    ``methods``: the main table's baselines (TICoE always; TRCE where chapter 11 trained it, the sensitive concept);
    ``claim_seeds``; ``ablation``; ``sizes``: prompts per sd14 evaluation set (``None``: the profile's);
    ``mcp_seeds``: images per look-alike prompt of the MCP table; ``ticoe``: overrides of the TICoE config (also in
    its cache key)."""
    name: str
    concepts: tuple = ("tench", "nudity", "starry style")
    methods: tuple = ("ESD-x", "ESD-u", "UCE", "Co-Erasing", "TRCE")
    claim_seeds: tuple = (0, 1, 2)
    ablation: bool = True
    sizes: MappingProxyType | None = None
    mcp_seeds: int = 8
    ticoe: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""

    def __post_init__(self):
        clash = {"seed", "cccm", "hvrl", "bank_size", "scales"} & set(self.ticoe)
        if clash:
            raise ValueError(f"Chapter12Plan.ticoe cannot set {', '.join(sorted(clash))} (chapter 12 sets them)")


CHAPTER12_PLANS = {
    "toy": Chapter12Plan("toy", note="tench (TICoE's look-alike object), the sensitive concept and the starry style; "
                                     "every baseline (chapters 10 and 11's cached edits; tench's trained here), "
                                     "3 claim seeds and the ablation; 2 CPU cores"),
    "sd14": Chapter12Plan(
        "sd14", concepts=("tench",), methods=("ESD-u", "UCE"), claim_seeds=(0,), ablation=False, mcp_seeds=2,
        sizes=MappingProxyType({"unlearndiff": 20, "i2p_sexual": 20, "objects": None, "big_artists": 10,
                                "coco_3k": 40}),
        ticoe=MappingProxyType({"reference_images": 100, "optimizer": "adafactor"}),
        note="tench only (TICoE's Table B object) beside ESD-u and UCE, one seed, no ablation; 100 reference images "
             "(the code: 200) and Adafactor, which fits a 16 GB T4 (the code's fp32 Adam does not: chapter 12's "
             "measured memory table)"),
    "sd14-paper": Chapter12Plan("sd14-paper", concepts=("tench", "nudity", "Van Gogh"),
                                methods=("ESD-x", "ESD-u", "UCE", "Co-Erasing", "TRCE"), sizes=PAPER_SIZES,
                                note="the paper's concepts at the full prompt sets, 3 claim seeds, the ablation, the "
                                     "code's Adam and 200 reference images (an A100 for hours)"),
}


def chapter12_plan(profile: str, preset: str | None = None) -> Chapter12Plan:
    """Chapter 12's plan: ``preset`` (a key of :data:`CHAPTER12_PLANS`), or the profile's own (``None``)."""
    return _plan(CHAPTER12_PLANS, "12", profile, preset)


@dataclass(frozen=True)
class Chapter30Plan:
    """What chapter 30 (SET) plants and tests (its parameters cell's ``preset``; the cell's explicit values win).

    ``attacks``: the backdoors (:data:`erasure_lib.chapters.BACKDOORS`); ``detectors``: SET and its baselines
    (:data:`erasure_lib.detect.benchmark.DETECTORS`); ``n_train``: clean training prompts of every detector;
    ``n_test``: clean and as many triggered held-out test prompts per backdoor; ``n_cda``: CDA's triggered training
    captions; ``claim_seeds``: detector seeds (the Deep-SVDD's initialisation and training order, the latents' base
    seed, the test split); ``ablation``: SET's ablations on every backdoor at the first seed; ``n_check``: held-out
    prompts of the backdoors' check (ASR, clean concept rates, FID_gen; ``None``: the whole pool)."""
    name: str
    attacks: tuple = ("rickrolling", "twt", "eviledit", "villan")
    detectors: tuple = ("SET", "FTT", "CDA", "UFID")
    n_train: int = 128
    n_test: int = 40
    n_cda: int = 40
    claim_seeds: tuple = (0, 1, 2)
    ablation: bool = True
    n_check: int | None = None
    note: str = ""


CHAPTER30_PLANS = {
    "toy": Chapter30Plan("toy", note="the four backdoors planted in the toy zoo, SET and the three baselines, 40 + 40 "
                                     "held-out test prompts per backdoor, 3 seeds and SET's ablations; 2 CPU cores"),
    "sd14": Chapter30Plan("sd14", attacks=("rickrolling", "eviledit"), detectors=("SET", "FTT", "UFID"), n_train=100,
                          n_test=25, n_cda=0, claim_seeds=(0,), ablation=False, n_check=100,
                          note="Rickrolling and EvilEdit planted in SD v1.4 by the same code (no public backdoored "
                               "checkpoints exist), SET, FTT and UFID, 25 + 25 COCO test prompts, one seed, the "
                               "backdoors checked on 100 held-out COCO prompts; a GPU"),
}


def chapter30_plan(profile: str, preset: str | None = None) -> Chapter30Plan:
    """Chapter 30's plan: ``preset`` (a key of :data:`CHAPTER30_PLANS`), or the profile's own (``None``)."""
    return _plan(CHAPTER30_PLANS, "30", profile, preset)


@dataclass(frozen=True)
class Chapter20Plan:
    """What chapter 20 (attacks) runs (its parameters cell's ``preset``; the cell's explicit values win).

    ``concepts``: the erased concepts attacked (the sensitive one, one object, one style); ``methods``: the rows (the
    earlier chapters' cached edits; a method without an edit of a concept is skipped for it, e.g. TRCE of an
    object); ``attacks``: the live attacks (UnlearnDiffAtk and P4D per model; Ring-A-Bell and MMA model-agnostic, on
    the sensitive concept, as in their papers); ``n_prompts``: seed prompts per concept; ``attack_seeds``: the seeds
    of the claims' concepts (``claim_concepts``), the others run at the first; ``released``: the released adversarial
    prompt files evaluated as transfer attacks (sd14)."""
    name: str
    concepts: tuple = ("nudity", "tench", "starry style", "church")
    methods: tuple = ("SD", "ESD-x", "ESD-u", "UCE", "Co-Erasing", "TRCE", "TICoE")
    attacks: tuple = ("UnlearnDiffAtk", "P4D", "Ring-A-Bell", "MMA")
    n_prompts: int = 4
    attack_seeds: tuple = (0, 1, 2)
    claim_concepts: tuple = ("nudity", "tench")
    released: tuple = ()
    n_released: int | None = None
    note: str = ""


CHAPTER20_PLANS = {
    "toy": Chapter20Plan("toy", note="the four attacks against every erased toy model of chapters 10-12 (nudity, "
                                     "tench, the starry style; church for the calibration), 4 seed prompts per "
                                     "concept, 3 attack seeds on the claims' concepts; 2 CPU cores"),
    "sd14": Chapter20Plan("sd14", concepts=("nudity",), methods=("SD", "ESD-u", "UCE", "Co-Erasing"),
                          attacks=("UnlearnDiffAtk",), n_prompts=4, attack_seeds=(0,), claim_concepts=("nudity",),
                          released=("p4d", "mma"), n_released=50,
                          note="the released P4D and MMA prompt files as transfer attacks on SD v1.4's erased "
                               "models (50 prompts each; None: all), UnlearnDiffAtk live on 4 nudity prompts at the "
                               "code's budget; a GPU"),
    "sd14-paper": Chapter20Plan("sd14-paper", concepts=("nudity",), methods=("SD", "ESD-u", "UCE", "Co-Erasing"),
                                attacks=("UnlearnDiffAtk", "P4D"), n_prompts=142, attack_seeds=(0, 1, 2),
                                claim_concepts=("nudity",), released=("p4d", "mma"), n_released=None,
                                note="the paper's protocol: the 142 UnlearnDiffAtk nudity prompts attacked live, "
                                     "the full P4D (151) and MMA (1,000) files; many GPU hours"),
}


def chapter20_plan(profile: str, preset: str | None = None) -> Chapter20Plan:
    """Chapter 20's plan: ``preset`` (a key of :data:`CHAPTER20_PLANS`), or the profile's own (``None``)."""
    return _plan(CHAPTER20_PLANS, "20", profile, preset)


@dataclass(frozen=True)
class Chapter40Plan:
    """What chapter 40 (NS-Net) trains and tests (its parameters cell's ``preset``; the cell's explicit values win).

    ``train_generators``: the fake sources of the training split (AIGIBench setting II's analog); ``n_train``: real
    training images (as many fakes, split between the training generators); ``n_val``: real validation images;
    ``n_test``: real test images, and as many images of every generator, drawn from the same captions;
    ``detectors``: NS-Net and its baselines (:data:`erasure_lib.detect.ns_net.DETECTORS`); ``claim_seeds``: the
    detectors' seeds (initialisation, LoRA, order); ``ablation``: projector mode, patch selection and lambda at the
    first seed; ``embed_n``: images per source in the feature-space figure."""
    name: str
    train_generators: tuple = ("GAN", "TinySD")
    n_train: int = 1024
    n_val: int = 128
    n_test: int = 256
    detectors: tuple = ("NS-Net", "CLIP+LoRA", "UnivFD", "CNN")
    claim_seeds: tuple = (0, 1, 2)
    ablation: bool = True
    embed_n: int = 200
    note: str = ""


CHAPTER40_PLANS = {
    "toy": Chapter40Plan("toy", note="real renders against 8 generators of 3 families (TinySD and 3 sampler "
                                     "settings, a second UNet, an erased TinySD, the VAE, a GAN); trained on the GAN "
                                     "+ TinySD; 256 + 256 test images per generator, 3 seeds, the ablations; 2 CPU "
                                     "cores"),
    "sd14": Chapter40Plan("sd14", train_generators=("SD-v1.4",), n_train=2000, n_val=200, n_test=500,
                          claim_seeds=(0,), ablation=False, embed_n=200,
                          note="real images from a folder you name (UniversalFakeDetect / AIGIBench layouts "
                               "accepted), fakes of SD v1.4 and its erased variants, CLIP ViT-L/14 + LoRA, BLIP "
                               "captions; trained on SD v1.4 alone (AIGIBench's setting II adds ProGAN images, "
                               "which are not generated here); a GPU"),
}


def chapter40_plan(profile: str, preset: str | None = None) -> Chapter40Plan:
    """Chapter 40's plan: ``preset`` (a key of :data:`CHAPTER40_PLANS`), or the profile's own (``None``)."""
    return _plan(CHAPTER40_PLANS, "40", profile, preset)
