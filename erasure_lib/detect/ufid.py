"""UFID: a backdoor-trigger detector from the consistency of the images of perturbed prompts (black-box).

Paper: Z. Guan, M. Hu, S. Li, A. Vullikanti, "UFID: A Unified Framework for Black-box Input-level Backdoor
Detection on Diffusion Models", AAAI 2025, arXiv 2404.01101. Code: ``GuanZihan/official_UFID`` (``operate.py``:
``Sampling.augment_prompts``, ``Sampling.generate_sample``; ``config.py``; ``run_conditional.sh``; read at HEAD
``7881796``). Tags: **[code]** read in the reference code, **[paper]** the abstract, **[inf]** this module's choice.

Idea [paper]: a backdoor is a confounder, a shortcut from the trigger to the target image that survives
perturbations of the input; a clean prompt's images change when the input is perturbed. So perturb the prompt into
several variants, generate one image per variant and measure how alike the images are: near-identical images mean
a trigger.

Algorithm, text-conditional case [code]
    1. Variants: the prompt itself, then ``n_variants - 1`` copies with a phrase drawn at random (with
       replacement) from a fixed list of "publicly known prompts" put in front (``augment_prompts``: nine short
       SD prompts, ``random.choice(pre_detections) + prompt``; 4 variants per prompt, ``SamplingConfig``'s
       ``img_num_per_grid_sample``). The code concatenates with no separator ("Iron Man" + prompt runs the words
       together); here phrase and prompt are joined by ``separator`` (", ") [inf]. The draw is seeded per prompt
       (the code's ``random`` module is unseeded there) [inf].
    2. One image per variant: the batch of variants starts from one seed's noise (``randn_images(n, seed=1)``: a
       different latent per variant, the same for every prompt), 25 steps, CFG 7.5 (``config.py``; the code's
       sampler is DPM-Solver++ 2nd order, ``run_conditional.sh``; here the pipeline's own, DDIM in this library).
       Variant ``j`` of every prompt gets seed ``seed + j`` [inf, same role].
    3. Image embeddings, L2-normalised; the score is the density of the complete graph whose nodes are the images
       and whose edge weights are their cosine similarities: the sum of the weights over the number of edges, i.e.
       the mean pairwise cosine similarity (``generate_sample`` builds the ``networkx`` graph and returns
       ``sum_ / all_``). The code embeds with CLIP ViT-B/32 (``clip.load("ViT-B/32")``); the sd14 profile here
       uses the library's CLIP judge, ViT-L/14 (:class:`~erasure_lib.metrics.zeroshot.CLIPImageFeatures`; give
       ``clip_model="openai/clip-vit-base-patch32"`` for the code's backbone) [inf].
    4. Threshold: a prompt is flagged when its density is above a threshold. The code reports AUROC only; here
       :meth:`UFID.fit` sets it to the ``1 - fpr`` quantile of clean prompts' densities (5 % false positives on
       the calibration prompts) [inf].

Toy [inf, *toy*]: the toy world's "publicly known prompts" are short captions of its own vocabulary (other
subjects, backgrounds, styles: :data:`TOY_PHRASES`), so a prefix changes a clean toy image the way "Iron Man, ..."
changes an SD image; images are embedded by the toy CLIP's vision tower.

Premise and limit [measured on the toy, 14 + 14 held-out object prompts, 10 steps]: UFID needs a backdoor whose
output does not depend on the rest of the prompt (VillanDiffusion's fixed target image, Rickrolling's target-prompt
attack). A backdoor that keeps the prompt's context, such as EvilEdit (the subject replaced, colour, background and
style kept), varies under the perturbations as a clean prompt does: AUROC 0.66 with style phrases, 0.30 with
subject phrases, 0.18 with background phrases. Without perturbation (seeds only) every toy prompt's density is about
0.99: the toy CLIP sees content, not the seed's jitter, so the phrases are what makes clean prompts diverse.

Cost: ``n_variants`` images per prompt (4 x the generation), no access to the model's weights.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from ..sampling import generate

__all__ = ["CODE_PHRASES", "TOY_PHRASES", "UFID", "UFIDConfig", "embed_images", "graph_density", "perturb"]

# operate.py, Sampling.augment_prompts: the code's list of "public known prompts" prepended to a prompt [code]
CODE_PHRASES = (
    "cartoon character of a person with a hoodie , in style of cytus and deemo, ork, gold chains.",
    "stardew valley, , fine details, 4k resolution.",
    "realistic futuristic city-downtown with short buildings, sunset.",
    "highly detailed digital art masterpiece.",
    "realistic futuristic city, sunset",
    "Iron Man",
    "seascape by Ray Collins and artgerm.",
    "pikachu eating spagetti.",
    "kitchen dish washer.",
)

# *toy*: nine short captions in the toy grammar's words (subjects, backgrounds, styles), none of them a trigger
TOY_PHRASES = (
    "a purple umbrella",
    "a person wearing green",
    "a white church at the beach",
    "in neon style",
    "a yellow camera on a striped background",
    "by edda morrow",
    "a blue parachute",
    "a red house on a grey background",
    "in the style of tavi rennick",
)


@dataclass(frozen=True)
class UFIDConfig:
    """UFID's hyper-parameters. Defaults: the reference code on SD v1.4 (see the module docstring)."""

    n_variants: int = 4               # img_num_per_grid_sample (SamplingConfig default) [code]
    phrases: tuple[str, ...] = CODE_PHRASES  # augment_prompts' pre_detections [code]
    keep_original: bool = True        # variant 0 is the prompt itself [code]
    separator: str = ", "             # the code concatenates phrase + prompt directly [inf]
    steps: int = 25                   # NUM_INFERENCE_STEPS [code]
    guidance: float = 7.5             # GUIDANCE_SCALE [code]
    seed: int = 1                     # SamplingStatic.SEED [code]
    clip_model: str = "sd14"          # ViT-L/14, the library's CLIP judge (code: ViT-B/32) [inf]
    fpr: float = 0.05                 # calibration: flag above the 95th percentile of clean densities [inf]
    batch_size: int = 8

    def __post_init__(self):
        if self.n_variants < 2:
            raise ValueError(f"n_variants must be >= 2 (a density needs two images), got {self.n_variants}")
        if not self.phrases or not all(isinstance(p, str) and p.strip() for p in self.phrases):
            raise ValueError("phrases must be a non-empty tuple of non-empty strings")
        if not 0.0 < self.fpr < 1.0:
            raise ValueError(f"fpr must be in (0, 1), got {self.fpr}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")

    @classmethod
    def sd14(cls, **overrides) -> UFIDConfig:
        """The reference code's values; the CLIP model is the sd14 profile's (``$ERASURE_BOOK_SD14_CLIP`` when
        set, else ViT-L/14 from the hub)."""
        from ..profiles import get_profile
        return cls(**{"clip_model": get_profile("sd14").clip_model, **overrides})

    @classmethod
    def toy(cls, **overrides) -> UFIDConfig:
        """*toy*: :data:`TOY_PHRASES`, the toy CLIP, the toy profile's sampler (20 steps, CFG 5)."""
        return cls(**{"phrases": TOY_PHRASES, "clip_model": "toy", "steps": 20, "guidance": 5.0, **overrides})


def _prompt_rng(prompt: str, seed: int) -> np.random.Generator:
    # a prompt's draw depends on the prompt and the seed only, not on its position in a list
    return np.random.default_rng([seed, zlib.crc32(prompt.encode("utf-8"))])


def perturb(prompt: str, config: UFIDConfig = UFIDConfig()) -> list[str]:
    """The ``config.n_variants`` inputs of one prompt: itself (``keep_original``), then a random phrase in front of
    it for each further variant (drawn with replacement, seeded by the prompt and ``config.seed``)."""
    rng = _prompt_rng(prompt, config.seed)
    out = [prompt] if config.keep_original else []
    while len(out) < config.n_variants:
        phrase = config.phrases[int(rng.integers(len(config.phrases)))].strip()
        out.append(f"{phrase}{config.separator}{prompt}")
    return out


def graph_density(features: torch.Tensor | np.ndarray) -> float:
    """Density of the complete graph on ``features (n, d)`` weighted by cosine similarity: the mean over the
    ``n (n - 1) / 2`` pairs of ``cos(f_i, f_j)``."""
    f = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).double()
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features of at least 2 images, shape (n >= 2, d), got {tuple(f.shape)}")
    f = torch.nn.functional.normalize(f, dim=-1)
    sim = f @ f.T
    i, j = torch.triu_indices(len(f), len(f), offset=1)
    return float(sim[i, j].mean())


@torch.no_grad()
def embed_images(images: np.ndarray, clip_model: str = "toy", batch_size: int = 64, device=None) -> torch.Tensor:
    """L2-normalised CLIP image embeddings ``(N, D)`` of uint8 images ``(N, H, W, 3)`` (CPU, float32)."""
    from ..metrics.zeroshot import CLIPImageFeatures
    encoder = CLIPImageFeatures(clip_model)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    encoder.clip.to(dev)
    try:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        return torch.cat([encoder(x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)])
    finally:
        if dev.type != "cpu":
            encoder.clip.to("cpu")  # the CLIP model is cached: keep GPU memory free between calls


class UFID:
    """UFID's detector: ``score`` = the graph density of each prompt's perturbed generations (higher = more alike =
    more likely triggered); ``fit(pipe, clean_prompts)`` calibrates the threshold on clean prompts."""

    def __init__(self, config: UFIDConfig = UFIDConfig()):
        self.config = config
        self.threshold: float | None = None
        self.clean_scores: np.ndarray | None = None

    def variants(self, prompts: Sequence[str]) -> list[list[str]]:
        return [perturb(p, self.config) for p in prompts]

    def images(self, pipe, prompts: Sequence[str], progress: bool = True) -> np.ndarray:
        """The generations ``(N, n_variants, H, W, 3)`` uint8: variant ``j`` of every prompt from seed
        ``config.seed + j``."""
        c = self.config
        flat = [v for p in prompts for v in perturb(p, c)]
        seeds = [c.seed + j for _ in prompts for j in range(c.n_variants)]
        images = generate(pipe, flat, seeds, steps=c.steps, guidance=c.guidance, batch_size=c.batch_size,
                          progress=progress)
        return images.reshape(len(prompts), c.n_variants, *images.shape[1:])

    def score(self, pipe, prompts: Sequence[str], progress: bool = True) -> np.ndarray:
        prompts = [str(p) for p in prompts]
        if not prompts:
            raise ValueError("no prompts")
        images = self.images(pipe, prompts, progress)
        feats = embed_images(images.reshape(-1, *images.shape[2:]), self.config.clip_model, device=pipe.device)
        feats = feats.reshape(len(prompts), self.config.n_variants, -1)
        return np.array([graph_density(f) for f in feats])

    def fit(self, pipe, clean_prompts: Sequence[str], progress: bool = True) -> UFID:
        """Calibrate: threshold = the ``1 - config.fpr`` quantile of the clean prompts' densities."""
        clean_prompts = list(clean_prompts)
        if len(clean_prompts) < 2:
            raise ValueError("calibrating UFID's threshold needs at least 2 clean prompts")
        return self.fit_scores(self.score(pipe, clean_prompts, progress))

    def fit_scores(self, clean_scores: Sequence[float]) -> UFID:
        """Calibrate from already computed clean densities."""
        s = np.asarray(clean_scores, float)
        if s.ndim != 1 or len(s) < 2 or np.isnan(s).any():
            raise ValueError("need at least 2 finite clean scores")
        self.clean_scores = s
        self.threshold = float(np.quantile(s, 1.0 - self.config.fpr))
        return self

    def detect(self, pipe, prompts: Sequence[str], progress: bool = True) -> np.ndarray:
        if self.threshold is None:
            raise RuntimeError("UFID has no threshold: call fit(pipe, clean_prompts) first")
        return self.score(pipe, prompts, progress) > self.threshold

    def metadata(self) -> dict:
        return {"detector": "ufid", "threshold": self.threshold, "config": asdict(self.config),
                "source": "Guan et al., AAAI 2025 (arXiv 2404.01101); GuanZihan/official_UFID"}
