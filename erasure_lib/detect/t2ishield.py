"""T2IShield: backdoor-trigger detection from the cross-attention maps of every prompt token (FTT and CDA).

Paper: Z. Wang, J. Zhang, S. Shan, X. Chen, "T2IShield: Defending Against Backdoors on Text-to-Image Diffusion
Models", ECCV 2024. Code: ``Robin-WZQ/T2IShield`` (``backdoor_detection/detect_fft_uni.py``, ``detect_cda_uni.py``,
``rema_classify.py``, ``detect_fft.py``, ``detect_reman_lda.py``, ``generate_data.ipynb``; read at commit
``2294831``). Spec: ``specs/set.md`` section 8 (SET's likely baseline). Tags: **[code]** read in the reference code,
**[paper]** stated by the paper's abstract / README, **[inf]** this module's inference or choice.

The phenomenon ("assimilation", [paper]): in a backdoored model the trigger token takes over the generation, and
the cross-attention maps of *all* the prompt's tokens collapse onto the same layout, the trigger's. A clean prompt
keeps one distinct map per word. Both detectors read that from one object, the token maps of a prompt:

Token maps [code]
    Generate with the (possibly backdoored) model, recording the cross-attention probabilities ``A`` of the
    conditional branch of every chosen layer at every denoising step; average them over heads, layers and steps
    (``AttentionStore.get_average_attention`` then ``aggregate_attention``: one mean over the stacked
    layers x heads, every layer having the same 8 heads). The layers are SD v1.4's cross-attention layers at 16x16
    (``res=16, from_where=("up", "down")``: ``down_blocks.2.attentions.{0,1}`` and ``up_blocks.1.attentions.{0,1,2}``;
    the mid block is left out). Token ``k``'s map is ``A[:, k]`` as an ``h x w`` image; maps 1..76 are kept (not
    [BoS]), each scaled to maximum 1 and quantised to 8 bits (``255 * m / m.max()`` cast to ``uint8``, later
    divided by 255; ``T2IShieldConfig.quantize``). Sampler: the pipeline's default PNDM, 50 steps, CFG 7.5, the
    latent of ``torch.Generator().manual_seed(42)`` for every prompt (one prompt per run).

FTT, F-norm threshold truncation (training-free) [code]
    With ``L = len(tokenizer.encode(prompt))`` (the prompt's tokens with [BoS] and [EoT]),
    ``mean_map = (M_1 + ... + M_L) / L`` and ``FTT = mean_{k=1..L-1} ||M_k - mean_map||_F``: how far the maps of the
    words and [EoT] sit from their mean. Assimilated maps are close to it; the prompt is flagged when
    ``FTT < 2.5`` (``detect_fft.py``; ``FTT >= threshold`` is benign; the code first rounds FTT to 3 decimals,
    which is not done here). Note the code's ranges: the mean runs over
    tokens 1..L, one past [EoT] (the first padding token), the distances over 1..L-1; ``code_token_range=False``
    uses tokens 1..L-1 for both [inf]. The threshold 2.5 belongs to 16 x 16 maps of values in [0, 1] (the norm
    grows with the map's side), so on another map size it is calibrated on clean prompts instead [inf].
    :class:`FTT`'s score is ``-FTT`` (higher = more likely triggered), flagged when ``-FTT > -threshold``.

CDA, covariance discriminant analysis (supervised) [code]
    Per prompt: the 76 maps, flattened, are reduced by a PCA fitted on that prompt's maps alone (20 components,
    ``rema_classify.pca``); the 20 x 20 covariance of the 76 projected maps is mapped to the tangent space of the
    SPD manifold by the matrix logarithm (``cov_m``: ``V diag(log lambda) V^T``, the "Riemannian log mapping");
    a linear discriminant (sklearn ``LinearDiscriminantAnalysis(n_components=1)``) is trained on these features of
    clean **and** triggered prompts (``rema_classify.py``: 375 + 375 prompts per trigger, 4 triggers per attack,
    Rickrolling and Villan Diffusion; the *test* triggers differ from the training ones, ``generate_data.ipynb``).
    Privilege: CDA's ``fit`` needs triggered prompts of some backdoored model, FTT and SET need none.
    Observation [inf]: the covariance of PCA scores is diagonal (PCA decorrelates), so the feature is, up to
    rounding, ``diag(log of the 20 PCA variances)``: the log-spectrum of the token maps. Implementation choices
    [inf]: eigenvalues are floored at ``1e-10`` before the log (the code's ``log(0)`` gives NaN and its
    ``except`` then answers "backdoor"); the features are the upper triangle of the symmetric matrix (the code
    flattens all 400 entries, duplicates included); the discriminant is the two-class Gaussian LDA with pooled
    covariance solved here (numpy, no scikit-learn), with an optional ridge ``lda_shrinkage`` (the toy has far
    fewer training prompts than features). The score is the LDA log-odds of "triggered" (flag: score > 0, what
    ``lda.predict`` does).

Implementation
    Cross-attention probabilities are recorded through :func:`erasure_lib.detect.attention.probe_attention`
    (diffusers attention processors; the code monkey-patches ``Attention.forward``). The denoising loop is this
    module's own (one thread, like the recorder needs), batched, every prompt from the latent of ``config.seed``
    as in the code; the text encoder and the UNet run on whole blocks of rows as :mod:`erasure_lib.sampling` does,
    so on the CPU a prompt's maps are the same bits in any batch. The mean is over UNet calls, as the code's
    ``AttentionStore`` counts steps (PNDM's 50-step schedule makes 51 calls, one timestep repeated). A copy of the
    scheduler is used; the pipeline is not changed.

On the toy [measured while writing ``tests/test_detect_baselines.py``: 12 + 12 held-out object prompts, 10 steps]
    The toy attacks of :mod:`erasure_lib.backdoors` do not make the token maps assimilate. FTT separates EvilEdit's
    triggered prompts from clean ones (AUROC 0.83), but as well on the *clean* model (0.81): the trigger word,
    four toy tokens with alike maps, lowers FTT by itself. CDA, supervised, learns the same cue. Read toy numbers
    with that control beside them (the same prompts on the unattacked model).

Configs: :meth:`T2IShieldConfig.sd14` (the code's values) and :meth:`T2IShieldConfig.toy` (*toy*: the toy UNet's
8 x 8 cross-attention layers, its profile's 20 DDIM steps at CFG 5, FTT threshold calibrated on clean prompts).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..sampling import _pad_list, _padded, initial_latents, row_block
from .attention import attention_layer_info, probe_attention

__all__ = ["CDA", "FTT", "T2IShieldConfig", "TokenMaps", "cda_features", "ftt_statistic", "selected_layers",
           "token_maps"]

SCHEDULERS = (None, "pndm", "ddim")


@dataclass(frozen=True)
class T2IShieldConfig:
    """T2IShield's hyper-parameters. Defaults: the reference code on SD v1.4 (see the module docstring)."""

    steps: int = 50                  # NUM_DIFFUSION_STEPS [code]
    guidance: float = 7.5            # GUIDANCE_SCALE [code]
    seed: int = 42                   # set_seed(42): every prompt starts from the same x_T [code]
    blocks: tuple[str, ...] = ("down_blocks.2", "up_blocks.1")  # the 16x16 cross-attention of SD v1.4 [code]
    scheduler: str | None = "pndm"   # "pndm": the SD v1.4 pipeline's default [code]; None: the pipeline's own
    quantize: bool = True            # 8-bit maps, as the code's PIL/uint8 round trip [code]
    code_token_range: bool = True    # FTT's mean over tokens 1..L (one past [EoT]) as the code [code]
    ftt_threshold: float | None = 2.5  # flag FTT < 2.5 [code]; None: calibrate on clean prompts at ftt_fpr [inf]
    ftt_fpr: float = 0.05            # target false-positive rate of a calibrated FTT threshold [inf]
    pca_components: int = 20         # decomposition.PCA(n_components=20) [code]
    eig_floor: float = 1e-10         # floor of the covariance eigenvalues before the log [inf]
    lda_shrinkage: float = 0.0       # ridge on the pooled covariance, a share of its mean variance [inf]
    batch_size: int = 8

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.blocks:
            raise ValueError("blocks must name at least one UNet block (e.g. 'down_blocks.2')")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.ftt_threshold is None and not 0.0 < self.ftt_fpr < 1.0:
            raise ValueError(f"ftt_fpr must be in (0, 1), got {self.ftt_fpr}")
        if self.pca_components < 1:
            raise ValueError(f"pca_components must be >= 1, got {self.pca_components}")
        if self.lda_shrinkage < 0 or self.eig_floor <= 0:
            raise ValueError("lda_shrinkage must be >= 0 and eig_floor > 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    @classmethod
    def sd14(cls, **overrides) -> T2IShieldConfig:
        """The reference code's values on SD v1.4 (512 px): the class defaults."""
        return cls(**overrides)

    @classmethod
    def toy(cls, **overrides) -> T2IShieldConfig:
        """*toy*: the toy UNet's finest cross-attention layers (8 x 8: ``down_blocks.0``, ``up_blocks.1``; SD's
        16 x 16 layers have no toy counterpart at 1/4 of the latent side), the toy profile's sampler (its DDIM,
        20 steps, CFG 5), the FTT threshold calibrated on clean prompts (2.5 is a value for 16 x 16 maps) and a
        ridge on the LDA (tens of training prompts for 210 features)."""
        base = dict(steps=20, guidance=5.0, blocks=("down_blocks.0", "up_blocks.1"), scheduler=None,
                    ftt_threshold=None, lda_shrinkage=0.1)
        return cls(**{**base, **overrides})


# --- token maps ------------------------------------------------------------------------------------------

@dataclass
class TokenMaps:
    """The averaged cross-attention maps of ``N`` prompts: ``maps (N, 77, h, w)`` float32 (every text position,
    averaged over heads, layers and steps, not yet normalised), ``n_tokens (N,)`` (``len(tokenizer.encode(p))``:
    the prompt's tokens with [BoS] and [EoT], untruncated as in the code) and the layers read."""

    maps: np.ndarray
    n_tokens: np.ndarray
    layers: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.maps)

    def normalised(self, quantize: bool = True) -> np.ndarray:
        """Maps of text positions 1..76 (not [BoS]), each scaled to maximum 1, optionally quantised to 8 bits as
        the code's ``(255 * m / m.max()).astype(uint8) / 255``: ``(N, 76, h, w)``."""
        m = self.maps[:, 1:]
        peak = m.max(axis=(2, 3), keepdims=True)
        scaled = 255.0 * m / np.maximum(peak, np.finfo(np.float32).tiny)
        if quantize:
            scaled = np.floor(scaled)  # astype(uint8) truncates
        return (scaled / 255.0).astype(np.float32)


def selected_layers(pipe, blocks: Sequence[str]) -> list[str]:
    """The cross-attention layers (``attn2``) of the UNet inside the named blocks (module-name prefixes such as
    ``"down_blocks.2"``); they must all work at one resolution (their maps are averaged)."""
    info = [layer for layer in attention_layer_info(pipe) if layer.kind == "cross"]
    chosen = [layer for layer in info if any(layer.name.startswith(b.rstrip(".") + ".") for b in blocks)]
    if not chosen:
        raise ValueError(f"no cross-attention layer inside the blocks {list(blocks)}; blocks with cross-attention: "
                         f"{sorted({layer.name.split('.attentions')[0] for layer in info})}")
    sizes = {layer.resolution for layer in chosen}
    if len(sizes) > 1:
        raise ValueError(f"the layers of blocks {list(blocks)} work at different resolutions {sorted(sizes)}: "
                         "their maps cannot be averaged; choose blocks of one resolution")
    return [layer.name for layer in chosen]


def _scheduler(pipe, kind: str | None):
    if kind is None:
        return copy.deepcopy(pipe.scheduler)
    from diffusers import DDIMScheduler, PNDMScheduler
    cls = PNDMScheduler if kind == "pndm" else DDIMScheduler
    return cls.from_config(pipe.scheduler.config)


@torch.no_grad()
def token_maps(pipe, prompts: Sequence[str], config: T2IShieldConfig = T2IShieldConfig(),
               progress: bool = True) -> TokenMaps:
    """Generate each prompt from ``config.seed``'s latent and average its conditional cross-attention maps over
    heads, the layers of ``config.blocks`` and all ``config.steps`` steps (see the module docstring)."""
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("no prompts")
    layers = selected_layers(pipe, config.blocks)
    side = next(layer.resolution for layer in attention_layer_info(pipe) if layer.name == layers[0])
    scheduler = _scheduler(pipe, config.scheduler)
    use_cfg = config.guidance != 1.0
    device = pipe.device
    tok = pipe.tokenizer
    n_tokens = np.array([len(tok(p).input_ids) for p in prompts])
    out = []
    starts = range(0, len(prompts), config.batch_size)
    with probe_attention(pipe, layers, record_probs=True, cond_only=False) as rec:
        for i in tqdm(starts, desc="T2IShield maps", disable=not progress or len(starts) < 2):
            batch = prompts[i:i + config.batch_size]
            n = len(batch)
            # whole blocks of rows, padded with the last prompt, as erasure_lib.sampling runs the CPU: a prompt's
            # maps are then the same bits in any batch (BLAS rounds a batch of 3 unlike one of 8)
            rows = _padded(n, row_block(device))
            cond, uncond = pipe.encode_prompt(_pad_list(batch, rows), device, 1, use_cfg)
            states = torch.cat([uncond, cond]) if use_cfg else cond
            z = initial_latents(pipe, [config.seed] * rows)  # scaled by the pipeline scheduler's init sigma
            scheduler.set_timesteps(config.steps, device=device)  # also resets PNDM's multistep history
            acc = torch.zeros(n, side[0] * side[1], states.shape[1], dtype=torch.float32, device=device)
            keep = slice(rows, rows + n) if use_cfg else slice(0, n)  # the batch is [uncond; cond]
            for t in scheduler.timesteps:
                inp = scheduler.scale_model_input(torch.cat([z, z]) if use_cfg else z, t)
                eps = pipe.unet(inp, t, encoder_hidden_states=states).sample
                for name in layers:
                    acc += rec.probs[name][-1][keep].float().mean(dim=1)  # mean over heads
                rec.clear()  # keep one call's maps: every step's (2B, 8, 256, 77) floats x 5 layers x 51 add up
                if use_cfg:
                    e_u, e_c = eps.chunk(2)
                    eps = e_u + config.guidance * (e_c - e_u)
                z = scheduler.step(eps, t, z).prev_sample
            acc /= len(layers) * len(scheduler.timesteps)
            out.append(acc.transpose(1, 2).reshape(n, -1, *side).cpu().numpy())
    return TokenMaps(maps=np.concatenate(out), n_tokens=n_tokens, layers=tuple(layers))


# --- FTT ---------------------------------------------------------------------------------------------------

def ftt_statistic(maps: TokenMaps, quantize: bool = True, code_token_range: bool = True) -> np.ndarray:
    """FTT of every prompt ``(N,)``: the mean Frobenius distance of the maps of its words and [EoT] from their
    mean map (small = assimilated = likely triggered). See the module docstring for the token ranges."""
    norm = maps.normalised(quantize)                      # positions 1..76 -> index 0..75
    out = np.empty(len(maps))
    for i, (m, n_tok) in enumerate(zip(norm, maps.n_tokens)):
        last = min(int(n_tok), m.shape[0] + 1)           # an over-long prompt is cut at 77 positions
        spoken = m[:last - 1]                             # positions 1..L-1: the words and [EoT]
        mean = m[:last].mean(0) if code_token_range else spoken.mean(0)
        if len(spoken) == 0:
            raise ValueError(f"prompt {i} has no token besides [BoS]")
        out[i] = np.linalg.norm((spoken - mean).reshape(len(spoken), -1), axis=1).mean()
    return out


class FTT:
    """T2IShield's training-free detector: score ``-FTT``, flagged when ``FTT < threshold`` (2.5 in the code).

    ``fit(pipe, clean_prompts)`` only calibrates the threshold, and only when ``config.ftt_threshold`` is None:
    then the flag threshold on the score is the ``1 - ftt_fpr`` quantile of the clean prompts' scores."""

    def __init__(self, config: T2IShieldConfig = T2IShieldConfig()):
        self.config = config
        self.threshold: float | None = None if config.ftt_threshold is None else -float(config.ftt_threshold)
        self.clean_scores: np.ndarray | None = None

    def score_maps(self, maps: TokenMaps) -> np.ndarray:
        return -ftt_statistic(maps, self.config.quantize, self.config.code_token_range)

    def score(self, pipe, prompts: Sequence[str], progress: bool = True) -> np.ndarray:
        return self.score_maps(token_maps(pipe, prompts, self.config, progress))

    def fit(self, pipe, clean_prompts: Sequence[str], progress: bool = True) -> FTT:
        if self.config.ftt_threshold is not None:
            return self  # training-free: the code's fixed threshold
        return self.fit_maps(token_maps(pipe, clean_prompts, self.config, progress))

    def fit_maps(self, clean: TokenMaps) -> FTT:
        """Calibrate on the maps of clean prompts (see :meth:`fit`)."""
        if self.config.ftt_threshold is not None:
            return self
        if len(clean) < 2:
            raise ValueError("calibrating the FTT threshold needs at least 2 clean prompts")
        self.clean_scores = self.score_maps(clean)
        self.threshold = float(np.quantile(self.clean_scores, 1.0 - self.config.ftt_fpr))
        return self

    def detect(self, pipe, prompts: Sequence[str], progress: bool = True) -> np.ndarray:
        if self.threshold is None:
            raise RuntimeError("FTT has no threshold: call fit(pipe, clean_prompts) first (config.ftt_threshold "
                               "is None, so it is calibrated on clean prompts)")
        return self.score(pipe, prompts, progress) > self.threshold

    def metadata(self) -> dict:
        return {"detector": "t2ishield-ftt", "threshold": self.threshold, "config": asdict(self.config),
                "source": "Wang et al., ECCV 2024; Robin-WZQ/T2IShield"}


# --- CDA ---------------------------------------------------------------------------------------------------

def _log_covariance(x: np.ndarray, n_components: int, eig_floor: float) -> np.ndarray:
    """PCA of the rows of ``x`` (maps) fitted on ``x`` itself, then the matrix log of the covariance of the
    projected rows (``rema_classify.pca`` + ``cov_m``), in float64."""
    x = x.astype(np.float64)
    centred = x - x.mean(0)
    k = min(n_components, *x.shape)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    scores = centred @ vt[:k].T
    scores_c = scores - scores.mean(0)
    cov = scores_c.T @ scores_c / (len(x) - 1)
    lam, vec = np.linalg.eigh(cov)
    return (vec * np.log(np.maximum(lam, eig_floor))) @ vec.T


def cda_features(maps: TokenMaps, n_components: int = 20, quantize: bool = True,
                 eig_floor: float = 1e-10) -> np.ndarray:
    """CDA's feature of every prompt ``(N, k (k + 1) / 2)``: the upper triangle of the log-covariance of its 76
    PCA-projected token maps, ``k = min(n_components, 76, h * w)``."""
    norm = maps.normalised(quantize)
    feats = []
    for m in norm:
        logcov = _log_covariance(m.reshape(len(m), -1), n_components, eig_floor)
        feats.append(logcov[np.triu_indices(len(logcov))])
    return np.stack(feats)


class CDA:
    """T2IShield's supervised detector: a linear discriminant on :func:`cda_features`.

    ``fit(pipe, clean_prompts, triggered_prompts)`` needs triggered prompts (of this or another backdoored model):
    a privilege FTT, UFID and SET do not have. The score is the log-odds of "triggered" under the LDA model
    (pooled covariance, class priors from the training counts); a prompt is flagged when it is > 0."""

    threshold = 0.0

    def __init__(self, config: T2IShieldConfig = T2IShieldConfig()):
        self.config = config
        self.weights: np.ndarray | None = None
        self.bias: float | None = None

    def _features(self, maps: TokenMaps) -> np.ndarray:
        c = self.config
        return cda_features(maps, c.pca_components, c.quantize, c.eig_floor)

    def fit(self, pipe, clean_prompts: Sequence[str], triggered_prompts: Sequence[str],
            progress: bool = True) -> CDA:
        clean_prompts, triggered_prompts = list(clean_prompts), list(triggered_prompts)
        if len(clean_prompts) < 2 or len(triggered_prompts) < 2:
            raise ValueError(f"CDA is supervised: fit needs at least 2 clean and 2 triggered prompts, got "
                             f"{len(clean_prompts)} clean and {len(triggered_prompts)} triggered")
        maps = token_maps(pipe, clean_prompts + triggered_prompts, self.config, progress)
        labels = np.r_[np.zeros(len(clean_prompts), bool), np.ones(len(triggered_prompts), bool)]
        return self.fit_features(self._features(maps), labels)

    def fit_features(self, x: np.ndarray, labels: np.ndarray) -> CDA:
        """Two-class LDA on features ``x (N, d)`` with boolean ``labels`` (True = triggered)."""
        labels = np.asarray(labels, bool)
        if x.ndim != 2 or len(x) != len(labels):
            raise ValueError(f"need features (N, d) and N labels, got {x.shape} and {len(labels)}")
        if labels.sum() < 2 or (~labels).sum() < 2:
            raise ValueError("the LDA needs at least 2 prompts of each class")
        mu1, mu0 = x[labels].mean(0), x[~labels].mean(0)
        centred = np.r_[x[labels] - mu1, x[~labels] - mu0]
        pooled = centred.T @ centred / (len(x) - 2)
        if self.config.lda_shrinkage > 0:
            ridge = self.config.lda_shrinkage * np.trace(pooled) / len(pooled)
            w = np.linalg.solve(pooled + ridge * np.eye(len(pooled)), mu1 - mu0)
        else:
            w = np.linalg.pinv(pooled, hermitian=True) @ (mu1 - mu0)  # rank-deficient: the minimum-norm solution
        self.weights = w
        self.bias = float(-w @ (mu0 + mu1) / 2 + np.log(labels.sum() / (~labels).sum()))
        return self

    def score_maps(self, maps: TokenMaps) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("CDA is not fitted: call fit(pipe, clean_prompts, triggered_prompts) first")
        return self._features(maps) @ self.weights + self.bias

    def score(self, pipe, prompts: Sequence[str], progress: bool = True) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("CDA is not fitted: call fit(pipe, clean_prompts, triggered_prompts) first")
        return self.score_maps(token_maps(pipe, prompts, self.config, progress))

    def detect(self, pipe, prompts: Sequence[str], progress: bool = True) -> np.ndarray:
        return self.score(pipe, prompts, progress) > self.threshold

    def metadata(self) -> dict:
        return {"detector": "t2ishield-cda", "threshold": self.threshold, "config": asdict(self.config),
                "supervised": True, "source": "Wang et al., ECCV 2024; Robin-WZQ/T2IShield"}
