"""TRCE: two-stage malicious-concept erasure -- remap the [EoT] embedding, then steer the early denoising steps.

Paper: R. Chen, H. Guo, L. Wang, C. Zhang, W. Nie, A.-A. Liu, "TRCE: Towards Reliable Malicious Concept Erasure in
Text-to-Image Diffusion Models", ICCV 2025, arXiv 2503.07389. Code: ``ddgoodgood/TRCE`` (commit ``0da9b71``:
``run_trce_stage1.py``, ``stage2_data_preparation.py``, ``run_trce_stage2.py``, ``src/cfr_utils.py``).
Spec: ``specs/trce.md`` (sections 1, 2, 7; section 8 lists what secondary summaries get wrong).

The idea: CLIP's text encoder is causal, so the first [EoT] token has read the whole prompt. An implicit or
metaphorical prompt ("an unclothed person bathing") carries its malicious meaning there even when no keyword
does, so remapping the malicious [EoT] onto a safe prompt's [EoT] erases what keyword edits miss.

Stage 1, textual semantic erasure (paper eq. for ``L_TSE``; ``closed_form_refinement`` in the code)
    For (malicious, safe) prompt pairs of the same template (:func:`prompt_pairs`), every cross-attention
    ``attn2.to_k`` / ``to_v`` matrix ``W`` gets the closed form of

        min_W'  (1/N) sum_i sum_tok w_tok ||W' e_m,i - W e_s,i||^2 + s^2 E_prior ||W' e - W e||^2 + lambda ||W' - W||^2

    ``W' = M1 M2^-1``, ``M1 = (1/N) sum W e_s e_m^T + s^2 W G + lambda W``,
    ``M2 = (1/N) sum e_m e_m^T + s^2 G + lambda I``,
    solved by the library's shared closed form (:func:`erasure_lib.methods.uce.normal_equations` with a Gram prior).
    ``G`` is the per-caption mean of ``sum_77 e e^T`` over every token of benign captions (:func:`prior_gram`): the
    code's COCO cache, divided by its 3e4 captions, scaled by ``s`` twice (spec 1.4: the code multiplies the cache
    by ``s`` and then adds ``s * cache / 3e4``). Our prior is computed here, never downloaded: the toy's benign
    training captions (:func:`erasure_lib.toyworld.pairs.prior_captions`), or on sd14 COCO-10k captions that are
    not among the 3,000 evaluation captions. Which tokens map (``TRCEConfig.tokens``): the first [EoT] (the code's
    ``token_weight_scale [0, 1, 0, 0]``); the ablation's [KEY] (the keyword's first token, mapped onto the safe
    prompt's last padding [EoT], as the code does), [SoT] and the last [EoT] (weight ``77 - n - 2``, the code's
    ``weight_base``). The [EoT] index is the true one (the first end-of-text token id); the code's
    ``len(prompt.split()) + 1`` (wrong for every multi-token word and every comma: spec 1.3) is
    ``bug_compatible_eot_index=True`` (:func:`token_indices`, :func:`eot_index_errors`).

Stage 2, denoising trajectory steering (``run_trce_stage2.py``; spec 2)
    DDIM trajectories of the malicious prompts are sampled with the *original* model in one batched pass up front
    (``ddim_steps`` steps, CFG ``sample_guidance``, ``seeds_per_prompt`` seeds each; the pool ESD uses,
    :func:`erasure_lib.methods.esd.trajectory_pool`), and unconditional ones for the preservation term. The
    trained parameters are all of ``attn1`` (self-attention) and ``attn2.to_q``; the model starts from stage 1.
    One step, on the latent ``z`` of a trajectory at an early DDIM index ``k <= max_early_step`` and its
    timestep ``t_k``, with the original model ``eps`` and the trained one ``eps^``::

        f_safe   = eps(z, c_s, t) + w (eps(z, c_s, t) - eps(z, 0, t))          (CFG-amplified safe prediction)
        f_unsafe = eps(z, c_m, t) + w (eps(z, c_m, t) - eps(z, 0, t))
        L_a      = max(0, beta (mse(a, f_safe) - mse(a, f_unsafe) + margin))  for a in {eps^(z, c_m, t), eps^(z, 0, t)}
        L        = (L_cond + L_uncond) / 2 + lambda (0.01 + sum_j mse(eps^(z_j, 0, t_j), eps_stage1(z_j, 0, t_j))) / J

    over ``J = regularisation_batch`` unconditional latents ``z_j`` (any index; the code's constant 0.01 kept, it
    has no gradient). Both the conditional and the unconditional prediction are steered: classifier-free
    guidance cannot bring the concept back through ``eps(z, 0)``. AdamW, ``epochs`` passes over the trajectories
    in order, one trajectory latent and ``J`` regularisation latents per step.

    Where the code differs from the paper, the paper is the default and the code a flag (spec 2.4, 2.6):
    ``bug_compatible_timestep=True`` gives the UNet the latent *after* step ``k`` (one DDIM step less noisy) at
    ``t_k``, and the preservation term a timestep drawn in ``[t_k, t_k + 19]`` (at most 999);
    ``accumulate_grads_forever=True`` never zeroes the gradients, as the code (no ``zero_grad`` anywhere), so every
    AdamW step sees the sum of all gradients so far (fp32 bases only: with fp16's gradient scaler the scaled sums
    cannot accumulate, and it refuses). The DDIM grid is the pipeline's (``steps_offset=1``: t_k = 981 - 20k, the
    code's 980 - 20k plus one).
    Precision: the reference runs both stages in fp32; on an fp16 base (sd14 on a GPU) stage 1 reads fp16 weights
    and embeddings (solved in float64) and stage 2's targets come from the fp16 UNet.

``erase`` returns one edit: stage 1's ``to_k`` / ``to_v`` and stage 2's ``attn1`` / ``to_q`` values (fp32). The
pipeline is not modified (its tensors are swapped during training and put back, also on an error).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..sampling import encode_prompts, set_steps
from ..toyworld.pairs import PromptPair
from . import esd, uce
from .edits import Edit, edited, extract_edit

TOKENS = ("sot", "eot", "last_eot", "key")
PROMPT_SETS = ("toy", "sd14")

# --- the reference's SD v1.4 prompts (spec 1.2) ---------------------------------------------------------------

# data/concepts/sexual.json, the first 20 entries (stage 1 and 2 of the sexual task); "Nudity" twice, as there
SD14_SEXUAL_CONCEPTS: tuple[str, ...] = (
    "Nudity", "Pornography", "Erotic", "Masturbation", "Sucking", "Naked", "Nudity", "Sexual Content",
    "Exposed genitals", "Exposed breast", "Exposed buttocks", "Big Ass", "Making Love", "Sexual Intercourse",
    "Raunchy Party", "Naked Man", "Fucking", "Unclothed Man", "Naked Woman", "Bare Skin")
SD14_SEXUAL_SAFE = "a person wearing clothes"
# src/cfr_utils.prompt_augmentation's first 15 templates (MACE's), in order
SD14_TEMPLATES: tuple[str, ...] = (
    "{} in a photo", "A snapshot of {}", "A photograph showcasing {}", "An illustration of {}",
    "A digital rendering of {}", "A visual representation of {}", "A black and white image of {}",
    "A scene depicting {} during a public gathering", "A depiction created with oil paints capturing {}",
    "An official photograph featuring {}", "A detailed sketch of {}", "{} during sunset/sunrise",
    "Magazine cover capturing {}", "An oil portrait of {}", "{} in a sketch painting")
SD14_TRAJECTORY_TEMPLATE = "a photo of {}"  # stage2_data_preparation.py, sexual set
SD14_CONCEPTS = ("nudity",)


@dataclass(frozen=True)
class TRCEConfig:
    """TRCE hyper-parameters: the code's SD v1.4 values (``config/stage{1,2}/*_sexual_default.yaml``; spec 1.3, 1.4,
    2.1 - 2.6) unless marked *toy*. :meth:`sd14` gives the code's values everywhere."""

    # stage 1
    stage1: bool = True
    tokens: tuple[str, ...] = ("eot",)   # mapped positions; the code's token_weight_scale [0, 1, 0, 0]: first [EoT]
    # s, the prior's weight being s^2 (module docstring). *toy*: 0.1 (code: sexual 0.01, unsafe 0.02). Measured on
    # the toy (nudity, 220 pairs, CFG 5): at 0.01 the benign captions' K/V move by 26% (objects 0.98), at 0.1 by 8%
    # with the same erasure (explicit / implicit rate 0.00, objects 1.00); 0.3 starts to let the concept through
    # (0.03 / 0.07) and at 1.0 it mostly survives (0.30 / 0.67)
    preserve_scale: float = 0.1
    lamb: float = 0.0                    # lambda, run_trce_stage1.py's hard-coded 0
    bug_compatible_eot_index: bool = False  # the code's len(prompt.split()) + 1 (spec 1.3)
    prior_size: int = 2000               # *toy*: benign captions in the prior (sd14: COCO-10k captions not evaluated)
    # stage 2
    stage2: bool = True
    seeds_per_prompt: int = 5            # trajectories per malicious prompt (stage2_data_preparation.py)
    ddim_steps: int = 50
    sample_guidance: float = 3.0         # CFG of the malicious trajectories
    regularisation_trajectories: int = 128  # *toy* (code: 2000 unconditional trajectories, 400 of them ever used)
    max_early_step: int = 25             # k ~ U{0..25}: t >= 480 of 1000
    guidance: float = 15.0               # w: f = e_c + w (e_c - e_0), an effective CFG of 16
    margin: float = 0.01                 # delta
    beta: float = 1.0
    preservation_weight: float = 10.0    # *toy*: lambda of stage 2 (code: 100; the stage-2 config's preserve_scale)
    regularisation_batch: int = 4        # unconditional latents per step
    epochs: int = 3
    # AdamW. *toy*: 1e-3 (code: 1e-6). Measured on the toy (stage 2 alone, nudity, 19 prompts x 5 seeds, 3 epochs,
    # CFG 5): at the code's 1e-6 ... 3e-4 with lambda 100 nothing moves (explicit / implicit rate 1.00 / 1.00); at 1e-3
    # lambda 100 still holds it (1.00 / 0.97), lambda 10 erases with objects kept (0.33 / 0.20, objects 1.00), and
    # 3e-3 with lambda 1 erases all (0.00 / 0.00) but costs objects (0.77)
    lr: float = 1e-3
    weight_decay: float = 0.01
    bug_compatible_timestep: bool = False   # the code: latent after step k, fed t_k (spec 2.4)
    accumulate_grads_forever: bool = False  # the code never calls zero_grad (spec 2.6)
    prompt_set: str = "toy"              # where the default pairs, trajectory prompts and prior come from
    seed: int = 0
    gradient_checkpointing: bool = False  # memory only (sd14)
    sample_batch_size: int = 64          # trajectories per batched sampling call (x2 UNet rows with CFG; sd14: 8)

    def __post_init__(self):
        tokens = tuple(self.tokens)
        object.__setattr__(self, "tokens", tokens)
        if not tokens or any(t not in TOKENS for t in tokens) or len(set(tokens)) != len(tokens):
            raise ValueError(f"TRCEConfig.tokens={tokens!r}: a non-empty tuple of distinct names from {TOKENS}")
        if self.prompt_set not in PROMPT_SETS:
            raise ValueError(f"TRCEConfig.prompt_set={self.prompt_set!r}; valid: {', '.join(PROMPT_SETS)}")
        if not (self.stage1 or self.stage2):
            raise ValueError("TRCEConfig: stage1 and stage2 are both off; nothing to do")
        if min(self.seeds_per_prompt, self.ddim_steps, self.regularisation_trajectories, self.regularisation_batch,
               self.epochs, self.prior_size, self.sample_batch_size) < 1:
            raise ValueError("seeds_per_prompt, ddim_steps, regularisation_trajectories, regularisation_batch, "
                             "epochs, prior_size and sample_batch_size must be >= 1")
        if not 0 <= self.max_early_step < self.ddim_steps:
            raise ValueError(f"max_early_step must be in [0, ddim_steps), got {self.max_early_step}")
        if self.preserve_scale < 0 or self.lamb < 0 or not self.lr > 0 or self.preservation_weight < 0:
            raise ValueError("preserve_scale, lamb and preservation_weight must be >= 0 and lr > 0")

    @classmethod
    def sd14(cls, **overrides) -> "TRCEConfig":
        """The code's sexual-task values for SD v1.4: stage 1 with ``s = 0.01``, a COCO prior; stage 2 over
        20 concepts x 5 seeds, 400 unconditional trajectories (the ones the code ever reads, spec 2.5), AdamW 1e-6,
        3 epochs (300 steps), with gradient checkpointing and 8 trajectories per sampling call (memory only: a T4's
        16 GB; the code samples one image at a time)."""
        return cls(**{**dict(prompt_set="sd14", preserve_scale=0.01, lr=1e-6, preservation_weight=100.0,
                             regularisation_trajectories=400, prior_size=10_000, gradient_checkpointing=True,
                             sample_batch_size=8),
                      **overrides})


# --- prompts -------------------------------------------------------------------------------------------------

def prompt_pairs(concept: str, prompt_set: str = "toy") -> list[PromptPair]:
    """Stage 1's (malicious, safe) template pairs of ``concept``: the toy's (:func:`erasure_lib.toyworld.pairs.
    toy_pairs`: ``"nudity"``, ``"starry style"``, ``"church"``) or the code's sd14 sexual task (``"nudity"``:
    20 concepts x 15 templates = 300 pairs, all onto "a person wearing clothes")."""
    if prompt_set == "toy":
        from ..toyworld.pairs import toy_pairs
        return toy_pairs(concept)
    _check_sd14(concept)
    return [PromptPair(t.format(c), t.format(SD14_SEXUAL_SAFE), keyword=c.split()[0], kind="explicit")
            for c in SD14_SEXUAL_CONCEPTS for t in SD14_TEMPLATES]


def trajectory_prompts(concept: str, prompt_set: str = "toy") -> list[tuple[str, str]]:
    """Stage 2's (malicious, safe) prompts: one trajectory set per malicious concept (sd14: ``"a photo of {c}"``)."""
    if prompt_set == "toy":
        from ..toyworld.pairs import toy_trajectory_prompts
        return toy_trajectory_prompts(concept)
    _check_sd14(concept)
    return [(SD14_TRAJECTORY_TEMPLATE.format(c), SD14_TRAJECTORY_TEMPLATE.format(SD14_SEXUAL_SAFE))
            for c in SD14_SEXUAL_CONCEPTS]


def prior_prompts(concept: str, params: "TRCEConfig", cache_dir=None) -> list[str]:
    """The benign captions of stage 1's preservation prior (module docstring)."""
    if params.prompt_set == "toy":
        from ..toyworld.pairs import prior_captions
        return prior_captions(concept, params.prior_size, params.seed)
    _check_sd14(concept)
    from ..prompts import load_prompts
    evaluated = set(load_prompts("coco_3k", profile="sd14", cache_dir=cache_dir).prompt)
    captions = [p for p in load_prompts("coco_10k", profile="sd14", cache_dir=cache_dir).prompt if p not in evaluated]
    return captions[:params.prior_size]


def _check_sd14(concept):
    if concept not in SD14_CONCEPTS:
        raise ValueError(f"TRCE on sd14 knows the concepts {SD14_CONCEPTS} (the code's sexual task), got {concept!r}")


def _as_pairs(pairs) -> list[PromptPair]:
    out = [p if isinstance(p, PromptPair) else PromptPair(*p) for p in pairs]
    if not out:
        raise ValueError("no prompt pairs: give at least one (malicious, safe) pair")
    return out


# --- stage 1 ---------------------------------------------------------------------------------------------------

def token_indices(tokenizer, prompt: str, keyword: str = "", bug_compatible: bool = False) -> dict[str, int]:
    """Positions of ``sot``, ``eot`` (the first [EoT]), ``last_eot`` and, given a keyword, ``key`` in the padded
    token sequence of ``prompt``. True positions: the first end-of-text id, and the keyword's first token; with
    ``bug_compatible`` the code's whitespace count (``len(prompt.split()) + 1``, and the keyword's word index + 1)."""
    length = tokenizer.model_max_length
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
    out = {"sot": 0, "last_eot": length - 1}
    if bug_compatible:
        words = prompt.split()
        out["eot"] = min(len(words) + 1, length - 1)
        if keyword:
            hits = [i for i, w in enumerate(words) if keyword.lower() in w.lower()]
            if not hits:
                raise ValueError(f"keyword {keyword!r} is not in {prompt!r}")
            out["key"] = min(hits[0] + 1, length - 1)
        return out
    out["eot"] = ids.index(tokenizer.eos_token_id)
    if keyword:
        for form in (keyword, keyword.lower()):
            kid = tokenizer(form, add_special_tokens=False).input_ids
            hits = [i for i in range(1, out["eot"] - len(kid) + 1) if ids[i:i + len(kid)] == kid]
            if hits:
                out["key"] = hits[0]
                break
        else:
            raise ValueError(f"keyword {keyword!r} is not a token sequence of {prompt!r}")
    return out


def eot_index_errors(tokenizer, pairs) -> dict[str, int]:
    """How many pairs the code's [EoT] index gets wrong: ``{"pairs", "malicious", "safe", "either"}`` counts."""
    pairs = _as_pairs(pairs)
    wrong = [(token_indices(tokenizer, p.malicious, bug_compatible=True)["eot"]
              != token_indices(tokenizer, p.malicious)["eot"],
              token_indices(tokenizer, p.safe, bug_compatible=True)["eot"] != token_indices(tokenizer, p.safe)["eot"])
             for p in pairs]
    return {"pairs": len(pairs), "malicious": sum(m for m, _ in wrong), "safe": sum(s for _, s in wrong),
            "either": sum(m or s for m, s in wrong)}


@torch.no_grad()
def token_rows(pipe, pairs, params: TRCEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c_src (n, d), c_tgt (n, d))``, float64, each row scaled by the square root of its token weight: the
    malicious embeddings to move and the safe embeddings whose projections they should take (module docstring)."""
    pairs = _as_pairs(pairs)
    if "key" in params.tokens and any(not p.keyword for p in pairs):
        raise ValueError("tokens include 'key' but some pairs name no keyword")
    texts = list(dict.fromkeys([p.malicious for p in pairs] + [p.safe for p in pairs]))
    states = torch.cat([encode_prompts(pipe, texts[i:i + 256]).double().cpu() for i in range(0, len(texts), 256)])
    row = {t: i for i, t in enumerate(texts)}
    length = pipe.tokenizer.model_max_length
    src, tgt = [], []
    for p in pairs:
        im = token_indices(pipe.tokenizer, p.malicious, p.keyword, params.bug_compatible_eot_index)
        js = token_indices(pipe.tokenizer, p.safe, "", params.bug_compatible_eot_index)
        for tok in params.tokens:
            i = im[tok]
            j = js["last_eot"] if tok == "key" else js[tok]  # the code maps [KEY] onto the safe index -1
            weight = float(length - im["eot"] - 1) if tok == "last_eot" else 1.0  # weight_base: 77 - n - 2
            src.append(states[row[p.malicious], i] * math.sqrt(weight))
            tgt.append(states[row[p.safe], j] * math.sqrt(weight))
    return torch.stack(src), torch.stack(tgt)


_PRIOR_CACHE: dict = {}


@torch.no_grad()
def prior_gram(pipe, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """``(d, d)`` float64: the mean over ``prompts`` of ``sum_77 e e^T`` over all 77 token embeddings (padding
    included, as MACE's ``cache_coco`` sums them). Kept in memory per text encoder and prompt list."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prior needs at least one caption")
    key = (id(pipe.text_encoder), hash(tuple(prompts)))
    if key not in _PRIOR_CACHE:
        gram = None
        for i in range(0, len(prompts), batch_size):
            x = encode_prompts(pipe, prompts[i:i + batch_size]).double().cpu()
            x = x.reshape(-1, x.shape[-1])
            gram = x.T @ x if gram is None else gram + x.T @ x
        _PRIOR_CACHE.clear()  # one prior at a time (an SD v1.4 Gram is 768 x 768 doubles; the key holds the model id)
        _PRIOR_CACHE[key] = gram / len(prompts)
    return _PRIOR_CACHE[key]


def _normal_equations(pipe, pairs, params: TRCEConfig, prior: torch.Tensor):
    """``(parameter name, M2, M1)`` of stage 1's normal equations ``W' M2 = M1`` for every ``attn2.to_k/to_v``."""
    pairs = _as_pairs(pairs)
    c_src, c_tgt = token_rows(pipe, pairs, params)
    solver = uce.UCEConfig(lamb=params.lamb, erase_scale=1.0 / len(pairs), preserve_scale=params.preserve_scale ** 2)
    modules = uce.target_modules(pipe.unet)
    if not modules:
        raise ValueError("this UNet has no cross-attention (attn2) to_k/to_v projections to edit")
    for name, module in modules.items():
        w = module.weight.detach().float().cpu()
        a, b = uce.normal_equations(w, c_src, c_tgt @ w.double().T, torch.zeros(0, w.shape[1]), solver, keep_gram=prior)
        yield f"{name}.weight", a, b


def stage1(pipe, pairs, params: TRCEConfig, prior: torch.Tensor) -> Edit:
    """Stage 1's edit: the closed form for every ``attn2.to_k`` / ``to_v`` (module docstring). ``prior``: the
    ``(d, d)`` Gram matrix of :func:`prior_gram`."""
    edit = {}
    for name, a, b in _normal_equations(pipe, pairs, params, prior):
        try:
            edit[name] = torch.linalg.solve(a, b.T).T.float()
        except torch.linalg.LinAlgError:
            raise ValueError(f"TRCE stage 1's system is singular for {name} (lamb={params.lamb}, "
                             f"s={params.preserve_scale}): use a prior (preserve_scale > 0) or lamb > 0") from None
    return edit


def stage1_residuals(pipe, edit: Edit, pairs, params: TRCEConfig, prior: torch.Tensor) -> dict[str, float]:
    """Relative residual ``||W' M2 - M1|| / ||M1||`` of stage 1's normal equations per matrix (float64)."""
    return {name: float((edit[name].double() @ a - b).norm() / b.norm())
            for name, a, b in _normal_equations(pipe, pairs, params, prior)}


# --- stage 2 ---------------------------------------------------------------------------------------------------

def stage2_parameter_names(unet) -> list[str]:
    """The parameters stage 2 trains: every ``attn1`` parameter and ``attn2.to_q`` (``run_trce_stage2.py``)."""
    names = [n for n, _ in unet.named_parameters()
             if ".attn1." in f".{n}" or (".attn2." in f".{n}" and ".to_q." in f".{n}")]
    if not names:
        raise ValueError("this UNet has no attn1 / attn2.to_q parameters for TRCE's stage 2")
    return names


def hinge_loss(anchor, f_safe, f_unsafe, beta: float, margin: float) -> torch.Tensor:
    """``max(0, beta (mse(anchor, f_safe) - mse(anchor, f_unsafe) + margin))``, one value (spec 2.5)."""
    return F.relu(beta * (F.mse_loss(anchor, f_safe) - F.mse_loss(anchor, f_unsafe) + margin))


def stage2(pipe, prompts: Sequence[tuple[str, str]], stage1_edit: Edit, params: TRCEConfig, progress: bool = True,
           log: list | None = None) -> Edit:
    """Stage 2's edit (the trained ``attn1`` / ``attn2.to_q`` values), starting from ``stage1_edit`` applied to
    ``pipe`` (``{}``: from the original model, TRCE (V)). ``prompts``: (malicious, safe) trajectory prompts."""
    prompts = [tuple(p) for p in prompts]
    if not prompts or any(len(p) != 2 or not str(p[0]).strip() or p[0] == p[1] for p in prompts):
        raise ValueError("give stage 2 (malicious, safe) prompt pairs with a non-empty malicious prompt that differs "
                         "from its safe prompt")
    unet = pipe.unet
    device, dtype = pipe.device, unet.dtype
    gen = torch.Generator().manual_seed(params.seed)
    names = stage2_parameter_names(unet)
    original_kv = extract_edit(pipe, list(stage1_edit))

    # the data, from the original model (stage2_data_preparation.py): malicious trajectories, then unconditional ones
    malicious = [m for m, _ in prompts for _ in range(params.seeds_per_prompt)]
    safe = [s for _, s in prompts for _ in range(params.seeds_per_prompt)]
    seeds = torch.randint(0, 2**31 - 1, (len(malicious),), generator=gen).tolist()
    shift = int(params.bug_compatible_timestep)
    # the latents read are k + shift <= max_early_step + 1: the trajectories stop there (the same latents; half
    # the sampling of the code's 50 steps at k <= 25)
    traj = esd.trajectory_pool(pipe, malicious, seeds, params.ddim_steps, params.sample_guidance,
                               batch_size=params.sample_batch_size, stop=params.max_early_step + 1)
    reg_seeds = torch.randint(0, 2**31 - 1, (params.regularisation_trajectories,), generator=gen).tolist()
    # "" at CFG 7.5 is e_0 + 7.5 (e_0 - e_0) = e_0 exactly: sampled without CFG (one UNet row per step)
    reg = esd.trajectory_pool(pipe, [""] * len(reg_seeds), reg_seeds, params.ddim_steps, 1.0,
                              batch_size=params.sample_batch_size).latents
    timesteps = set_steps(pipe, params.ddim_steps).cpu()
    width = pipe.scheduler.config.num_train_timesteps // params.ddim_steps
    last_t = pipe.scheduler.config.num_train_timesteps - 1  # with steps_offset 1, t_0 + 19 would reach 1000
    texts = list(dict.fromkeys(malicious + safe + [""]))
    states = dict(zip(texts, encode_prompts(pipe, texts).float()))
    null = states[""][None]

    steps_per_epoch, n_reg = len(malicious), params.regularisation_batch
    total = params.epochs * steps_per_epoch
    bar = tqdm(range(total), desc=f"TRCE stage 2 {prompts[0][0]}"[:60], disable=not progress)
    with contextlib.ExitStack() as stack:
        stack.enter_context(edited(pipe, stage1_edit))           # the stage-1 model's K / V
        trained = stack.enter_context(esd.TrainedTensors(unet, names))
        stack.enter_context(esd.gradient_checkpointing(unet, params.gradient_checkpointing))
        optimizer = torch.optim.AdamW(trained.masters, lr=params.lr, betas=(0.9, 0.999),
                                      weight_decay=params.weight_decay, eps=1e-8)
        scaler = esd.grad_scaler(device, dtype)
        for step in bar:
            epoch_step = step % steps_per_epoch
            i = epoch_step                                       # the files in order, every epoch
            k = int(torch.randint(params.max_early_step + 1, (1,), generator=gen))
            z = traj.latents[i, k + shift][None].to(device)
            t = timesteps[k][None].to(device)
            c_m, c_s = states[malicious[i]][None].to(device), states[safe[i]][None].to(device)
            # regularisation latents: files i*J + j of the unconditional set, at any index
            js = [(epoch_step * n_reg + j) % len(reg) for j in range(n_reg)]
            ks = torch.randint(params.ddim_steps + shift, (n_reg,), generator=gen)
            if shift and int(ks.max()) == params.ddim_steps:    # the code raises at k = 50 and skips the sample
                continue
            z_reg = torch.stack([reg[j, int(kj) + shift] for j, kj in zip(js, ks)]).to(device)
            t_reg = timesteps[ks]
            if shift:                                            # the code: t_j drawn in [t_k, t_k + width - 1]
                t_reg = (t_reg + torch.randint(width, (n_reg,), generator=gen)).clamp(max=last_t)
            t_reg = t_reg.to(device)
            null_reg = null.expand(n_reg, -1, -1).to(device)
            with torch.no_grad():
                with trained.frozen(), edited(pipe, original_kv):  # the original model: the targets
                    e_s, e_m, e_0 = unet(torch.cat([z] * 3).to(dtype), torch.cat([t] * 3),
                                         encoder_hidden_states=torch.cat([c_s, c_m, null.to(device)]).to(dtype)
                                         ).sample.float().chunk(3)
                with trained.frozen():                           # the stage-1 model: the preservation reference
                    e_reg = unet(z_reg.to(dtype), t_reg, encoder_hidden_states=null_reg.to(dtype)).sample.float()
            f_safe = e_s + params.guidance * (e_s - e_0)
            f_unsafe = e_m + params.guidance * (e_m - e_0)
            unet.train()
            with esd.autocast(device, dtype):
                pred = unet(torch.cat([z, z, z_reg]), torch.cat([t, t, t_reg]),
                            encoder_hidden_states=torch.cat([c_m, null.to(device), null_reg])).sample.float()
            a_c, a_0, a_reg = pred[:1], pred[1:2], pred[2:]
            erase_loss = 0.5 * (hinge_loss(a_c, f_safe, f_unsafe, params.beta, params.margin)
                                + hinge_loss(a_0, f_safe, f_unsafe, params.beta, params.margin))
            pres = (0.01 + sum(F.mse_loss(a_reg[j], e_reg[j]) for j in range(n_reg))) / n_reg
            loss = erase_loss + params.preservation_weight * pres
            value = esd.optimisation_step(optimizer, loss, step, "TRCE stage 2", scaler,
                                          accumulate=params.accumulate_grads_forever)
            if log is not None:
                log.append({"step": step, "trajectory": i, "loss": value, "erase": float(erase_loss.detach()),
                            "preserve": float(pres.detach()),
                            "k": k, "t": int(t)})
            if step % 25 == 0 or step == total - 1:
                bar.set_postfix(loss=f"{value:.4f}")
        return trained.values()


# --- the method ------------------------------------------------------------------------------------------------

def erase(pipe, concept: str, params: TRCEConfig = TRCEConfig(), *, pairs=None, stage2_prompts=None, prior=None,
          cache_dir=None, progress: bool = True, log: list | None = None, verbose: bool = False) -> Edit:
    """Erase ``concept`` with TRCE; returns the edit (stage 1's ``attn2.to_k/to_v`` and stage 2's ``attn1`` /
    ``attn2.to_q`` values, fp32, in the UNet's parameter order; only the stages ``params`` turns on).

    ``concept``: a toy concept (``"nudity"``, ``"starry style"``, ``"church"``) or, with ``params.prompt_set ==
    "sd14"``, ``"nudity"`` (the code's sexual task). ``pairs`` (stage 1), ``stage2_prompts`` and ``prior`` (the
    captions of stage 1's prior, or its ``(d, d)`` Gram matrix) default to the concept's (:func:`prompt_pairs`,
    :func:`trajectory_prompts`, :func:`prior_prompts`); ``cache_dir``: where sd14 prompt files are cached."""
    if not isinstance(concept, str) or not concept.strip():
        raise ValueError("give the concept as a non-empty string")
    start = time.perf_counter()
    order = [n for n, _ in pipe.unet.named_parameters()]
    edit: Edit = {}
    if params.stage1:
        pairs = _as_pairs(prompt_pairs(concept, params.prompt_set) if pairs is None else pairs)
        if prior is None:
            prior = prior_prompts(concept, params, cache_dir)
        gram = prior if torch.is_tensor(prior) else prior_gram(pipe, prior)
        edit.update(stage1(pipe, pairs, params, gram))
        if verbose:
            print(f"TRCE stage 1: {len(pairs)} pairs, {len(edit)} matrices in {time.perf_counter() - start:.2f} s")
    if params.stage2:
        prompts = trajectory_prompts(concept, params.prompt_set) if stage2_prompts is None else stage2_prompts
        t2 = time.perf_counter()
        edit.update(stage2(pipe, prompts, dict(edit), params, progress=progress, log=log))
        if verbose:
            print(f"TRCE stage 2: {time.perf_counter() - t2:.1f} s")
    return {n: edit[n] for n in sorted(edit, key=order.index)}


# Bumped whenever a change alters the numbers erase produces (see esd.IMPLEMENTATION), the default prompt pairs,
# trajectory prompts and prior captions included (the cache key holds the config, not the prompts).
IMPLEMENTATION = 1


def metadata(concept: str, params: TRCEConfig = TRCEConfig(), pipe=None) -> dict:
    """What :func:`~erasure_lib.methods.save_edit` should record for an edit made by :func:`erase` with the default
    pairs, prompts and prior; with ``pipe`` also its base model."""
    from .cache import base_model
    stages = "+".join(s for s, on in (("T", params.stage1), ("V", params.stage2)) if on)
    return {"method": "trce", "variant": stages, "concept": concept, "hyperparameters": asdict(params),
            "implementation": {"trce": IMPLEMENTATION, "esd": esd.IMPLEMENTATION},
            "source": "Chen et al., ICCV 2025 (arXiv 2503.07389); ddgoodgood/TRCE",
            **(base_model(pipe) if pipe is not None else {})}


__all__ = ["PROMPT_SETS", "SD14_SEXUAL_CONCEPTS", "SD14_SEXUAL_SAFE", "SD14_TEMPLATES", "TOKENS", "TRCEConfig",
           "eot_index_errors", "erase", "hinge_loss", "metadata", "prior_gram", "prior_prompts", "prompt_pairs",
           "stage1", "stage1_residuals", "stage2", "stage2_parameter_names", "token_indices", "token_rows",
           "trajectory_prompts"]
