"""UCE: Unified Concept Editing, a closed-form edit of every cross-attention ``to_k`` / ``to_v``.

Paper: R. Gandikota, H. Orgad, Y. Belinkov, J. Materzyńska, D. Bau, "Unified Concept Editing in Diffusion
Models", WACV 2024, arXiv 2308.14761. Code: ``rohitgandikota/unified-concept-editing``
(``trainscripts/uce_sd_erase.py`` at HEAD ``28c81ed``; the paper-era ``train-scripts/train_erase.py`` at ``bd5fb51``).
Spec: ``specs/uce.md`` section 1.

Text reaches the UNet only through the cross-attention keys and values ``K = W_k c``, ``V = W_v c`` of the
text-token embeddings ``c``. UCE changes each of those matrices ``W`` (independently) so that

* each concept to erase, embedding ``c_i``, is projected where the *guide* concept was: ``W' c_i ≈ W c_guide(i)``;
* each concept to preserve, embedding ``c_j``, keeps its projection: ``W' c_j ≈ W c_j``;
* ``W'`` stays close to ``W``.

Algorithm (UCE paper eq. 7; the code's ``mat1 @ inverse(mat2)``): minimise

    sum_E s_e ||W' c_i - v*_i||^2 + sum_P s_p ||W' c_j - W c_j||^2 + lambda ||W' - W||_F^2

whose normal equations ``W' A = B`` have the closed-form solution

    W' = B A^-1,   B = lambda W + sum_E s_e v*_i c_i^T + sum_P s_p (W c_j) c_j^T,
                   A = lambda I + sum_E s_e c_i c_i^T + sum_P s_p c_j c_j^T,       v*_i = W c_guide(i).

``A`` is symmetric positive definite for ``lambda > 0``; it is solved with ``torch.linalg.solve``, not inverted,
and in float64: the reference inverts in fp32, but with the legacy token choice (150+ rows of norm ~8) ``A``'s
condition number reaches 1e5 on the toy model and fp32 then leaves errors of 1e-3 in weights of size 0.4. The
result is cast back to the UNet's dtype.

Which token embeddings (``UCEConfig.tokens``; the spec asks every result to record it):

* ``"last"`` (default; ``uce_sd_erase.py``): one embedding per prompt, the text encoder's output at index
  ``attention_mask.sum() - 2``: the last token before [EoT] (for ``"nude"`` the word itself; for the empty
  guide ``""`` that index is 0, the [BoS] token). Erase, guide and preserve prompts all use this token.
* ``"legacy"`` (``train_erase.py``, the code of the paper's experiments): an erase prompt contributes the
  embeddings from its last word to the end of the 77-token sequence ([EoT] and the padding, which in CLIP's
  causal encoder all carry the concept), aligned position by position with the guide prompt's embeddings from
  *its* last word; a preserve prompt contributes all 77 of its token embeddings, and the empty prompt is always
  preserved too (the script's retain texts are ``[''] + preserve``). The guide ``""`` is replaced by ``" "`` as
  the script does (the same tokens). The script's default ``preserve_scale`` was ``max(0.1, 1 / #retain texts)``;
  here it is ``UCEConfig.preserve_scale`` as given.

The reference's ``--expand_prompts`` (``UCEConfig.expand_prompts``) adds templated copies of every concept and
its guide ("image of {c}", "photo of {c}", ...) to the erase set.

Cost: 14 matrices of at most 128 x 64 on the toy model (32 of up to 1280 x 768 on SD v1.4); the text encoder
pass dominates. Well under a second on one CPU thread for the toy model.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from .edits import Edit

# uce_sd_erase.py's --expand_prompts templates for concept_type "object" and "art"
OBJECT_TEMPLATES = ("image of {}", "photo of {}", "portrait of {}", "picture of {}", "painting of {}")
ART_TEMPLATES = ("painting by {}", "art by {}", "artwork by {}", "picture by {}", "style of {}")
TOKEN_MODES = ("last", "legacy")


@dataclass(frozen=True)
class UCEConfig:
    """UCE hyper-parameters. Defaults: ``uce_sd_erase.py`` argparse defaults (spec uce.md 1.3)."""

    lamb: float = 0.5            # lambda, pull toward W (uce_sd_erase.py --lamb 0.5; train_erase.py's main: 0.5)
    erase_scale: float = 1.0     # s_e (--erase_scale 1)
    preserve_scale: float = 1.0  # s_p (--preserve_scale 1)
    tokens: str = "last"         # which token embeddings; see the module docstring
    edit_keys: bool = True       # edit to_k as well as to_v (uce_sd_erase.py: both; train_erase.py: with_to_k=True)
    expand_prompts: str | None = None  # None, "object" or "art": the reference's --expand_prompts templates

    def __post_init__(self):
        if self.tokens not in TOKEN_MODES:
            raise ValueError(f"tokens must be one of {TOKEN_MODES}, got {self.tokens!r}")
        if self.expand_prompts not in (None, "object", "art"):
            raise ValueError(f"expand_prompts must be None, 'object' or 'art', got {self.expand_prompts!r}")
        if self.lamb < 0 or self.erase_scale < 0 or self.preserve_scale < 0:
            raise ValueError("lamb, erase_scale and preserve_scale must be >= 0")


def erase(pipe, concepts: str | Sequence[str], preserve: Sequence[str] = (), guide: str | Sequence[str] = "",
          params: UCEConfig = UCEConfig(), verbose: bool = False) -> Edit:
    """Erase ``concepts`` (each mapped onto its ``guide``; one guide string for all, or one per concept) while
    preserving ``preserve``; returns the edit: the new weight of every cross-attention ``to_k``/``to_v``.

    ``guide=""`` (the script's default for objects) sends a concept where the empty prompt is; give an anchor
    ("a person", "art", ...) to send it there instead. The pipeline is not modified; apply the edit with
    :func:`~erasure_lib.methods.apply_edit`."""
    start = time.perf_counter()
    problem = build_problem(pipe, concepts, preserve, guide, params)
    edit = {name: solve(*terms, params).to(pipe.unet.dtype) for name, terms in problem.items()}
    if verbose:
        print(f"UCE: edited {len(edit)} matrices in {time.perf_counter() - start:.3f} s")
    return edit


def metadata(concepts, preserve=(), guide="", params: UCEConfig = UCEConfig()) -> dict:
    """What :func:`~erasure_lib.methods.save_edit` should record for an edit made by :func:`erase`."""
    concepts = [concepts] if isinstance(concepts, str) else list(concepts)
    return {"method": "uce", "concept": "; ".join(concepts), "concepts": concepts, "preserve": list(preserve),
            "guide": guide if isinstance(guide, str) else list(guide), "hyperparameters": asdict(params),
            "source": "Gandikota et al., WACV 2024 (arXiv 2308.14761); rohitgandikota/unified-concept-editing"}


def target_modules(unet) -> dict[str, torch.nn.Linear]:
    """Every cross-attention key/value projection, by module name (``...attn2.to_k`` / ``...attn2.to_v``)."""
    return {name: m for name, m in unet.named_modules()
            if ".attn2." in f".{name}." and name.rsplit(".", 1)[-1] in ("to_k", "to_v")}


# --- the solve ----------------------------------------------------------------------------------------------

def solve(w: torch.Tensor, c_erase: torch.Tensor, v_erase: torch.Tensor, c_keep: torch.Tensor,
          params: UCEConfig) -> torch.Tensor:
    """``W' = B A^-1`` for one matrix ``w (d_out, d)``; ``c_erase (n, d)`` with targets ``v_erase (n, d_out)``,
    ``c_keep (m, d)`` keep their projection ``w c``. Accumulated and solved in float64, returned as float32."""
    a, b = normal_equations(w, c_erase, v_erase, c_keep, params)
    # W' A = B  <=>  A^T W'^T = B^T, and A is symmetric
    try:
        return torch.linalg.solve(a, b.T).T.float()
    except torch.linalg.LinAlgError:
        raise ValueError(f"UCE's system is singular (lamb={params.lamb}, {len(c_erase) + len(c_keep)} embedding rows "
                         f"for {a.shape[0]} dimensions): use lamb > 0") from None


def normal_equations(w, c_erase, v_erase, c_keep, params: UCEConfig, keep_gram: torch.Tensor | None = None):
    """``(A, B)`` of the normal equations ``W' A = B`` of UCE's objective for one matrix (see the module docstring).

    ``keep_gram (d, d)``: a preservation prior given as its Gram matrix ``sum_j c_j c_j^T`` instead of rows (TRCE's
    COCO cache, MACE's ``cache_coco``: millions of token embeddings summed once); it joins ``c_keep``'s terms with
    the same ``preserve_scale``, its targets being ``W c_j`` (so its ``B`` term is ``W keep_gram``). This is the
    closed form the library's editing methods share (``specs/uce.md`` section 4)."""
    w = w.detach().double()
    c_erase, v_erase, c_keep = c_erase.double(), v_erase.double(), c_keep.double()
    d = w.shape[1]
    a = params.lamb * torch.eye(d, dtype=torch.float64, device=w.device)
    b = params.lamb * w.clone()
    a += params.erase_scale * c_erase.T @ c_erase
    b += params.erase_scale * v_erase.T @ c_erase
    v_keep = c_keep @ w.T
    a += params.preserve_scale * c_keep.T @ c_keep
    b += params.preserve_scale * v_keep.T @ c_keep
    if keep_gram is not None:
        if keep_gram.shape != (d, d):
            raise ValueError(f"keep_gram has shape {tuple(keep_gram.shape)}, expected ({d}, {d})")
        gram = keep_gram.to(device=w.device, dtype=torch.float64)
        a += params.preserve_scale * gram
        b += params.preserve_scale * w @ gram
    return a, b


def residuals(pipe, edit: Edit, concepts, preserve=(), guide="", params: UCEConfig = UCEConfig()) -> dict[str, float]:
    """Relative residual ``||W' A - B|| / ||B||`` of the normal equations for every edited matrix (the gradient of
    UCE's objective at ``W'``, scaled), in float64: about 1e-7 when ``edit`` is the (float32-rounded) minimiser."""
    problem = build_problem(pipe, concepts, preserve, guide, params)
    if set(problem) != set(edit):
        raise ValueError(f"the edit has {len(edit)} tensors but UCE edits {len(problem)}")
    out = {}
    for name, (w, ce, ve, ck) in problem.items():
        a, b = normal_equations(w, ce, ve, ck, params)
        out[name] = float((edit[name].double() @ a - b).norm() / b.norm())
    return out


# --- embeddings ---------------------------------------------------------------------------------------------

def build_problem(pipe, concepts, preserve=(), guide="", params: UCEConfig = UCEConfig()):
    """``{parameter name: (W, c_erase, v*_erase, c_keep)}`` for every edited matrix."""
    concepts = [concepts] if isinstance(concepts, str) else list(concepts)
    if not concepts:
        raise ValueError("give at least one concept to erase")
    guides = [guide] * len(concepts) if isinstance(guide, str) else list(guide)
    if len(guides) != len(concepts):
        raise ValueError(f"{len(concepts)} concepts but {len(guides)} guide concepts: "
                         "give one guide or one per concept")
    preserve = list(preserve)
    if params.expand_prompts:
        templates = OBJECT_TEMPLATES if params.expand_prompts == "object" else ART_TEMPLATES
        pairs = list(zip(concepts, guides))
        for c, g in pairs:
            concepts += [t.format(c) for t in templates]
            guides += [t.format(g) for t in templates]
    if params.tokens == "legacy":
        guides = [g if g != "" else " " for g in guides]  # train_erase.py: an empty new text becomes ' '
        preserve = [""] + preserve  # train_erase.py: retain_texts = [''] + preserve_concepts
    c_src, c_guide, c_keep = _token_embeddings(pipe, concepts, guides, preserve, params.tokens)
    modules = target_modules(pipe.unet)
    if not params.edit_keys:
        modules = {k: m for k, m in modules.items() if k.endswith("to_v")}
    if not modules:
        raise ValueError("this UNet has no cross-attention (attn2) to_k/to_v projections to edit")
    problem = {}
    for name, m in modules.items():
        w = m.weight.detach().float().cpu()  # the solve runs on the CPU in float64; apply_edit moves it back
        problem[f"{name}.weight"] = (w, c_src, c_guide @ w.T, c_keep)
    return problem


@torch.no_grad()
def _token_embeddings(pipe, concepts, guides, preserve, mode):
    """``(c_erase (n, d), c_guide (n, d), c_keep (m, d))``, fp32: the rows of the least-squares problem."""
    texts = list(dict.fromkeys(concepts + guides + preserve))
    tok = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt")
    ids = tok.input_ids.to(pipe.text_encoder.device)
    states = pipe.text_encoder(ids)[0].float().cpu()  # (T, 77, d): last_hidden_state, what the UNet reads
    last = tok.attention_mask.sum(1) - 2             # index of the last token before [EoT] ([BoS] for "")
    row = {t: i for i, t in enumerate(texts)}
    d, length = states.shape[-1], states.shape[1]
    if mode == "last":
        pick = lambda t: states[row[t], last[row[t]]][None]  # noqa: E731
        c_src = torch.cat([pick(t) for t in concepts])
        c_guide = torch.cat([pick(t) for t in guides])
        c_keep = torch.cat([pick(t) for t in preserve]) if preserve else torch.zeros(0, d)
    else:  # legacy: from the last word to the end, aligned between a concept and its guide; all tokens to keep
        src, gde = [], []
        for c, g in zip(concepts, guides):
            i, j = int(last[row[c]]), int(last[row[g]])
            far = max(i, j)
            src.append(states[row[c], i:length - (far - i)])
            gde.append(states[row[g], j:length - (far - j)])
        c_src, c_guide = torch.cat(src), torch.cat(gde)
        c_keep = torch.cat([states[row[t]] for t in preserve]) if preserve else torch.zeros(0, d)
    return c_src, c_guide, c_keep


__all__ = ["ART_TEMPLATES", "OBJECT_TEMPLATES", "TOKEN_MODES", "UCEConfig", "build_problem", "erase", "metadata",
           "normal_equations", "residuals", "solve", "target_modules"]
