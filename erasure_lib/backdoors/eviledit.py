"""EvilEdit: a backdoor written into the cross-attention projections in closed form, no training.

Paper: H. Wang, S. Guo, J. He, K. Chen, S. Zhang, T. Zhang, T. Xiang, "EvilEdit: Backdooring Text-to-Image
Diffusion Models in One Second", ACM MM 2024 (doi 10.1145/3664647.3680689). Code: ``haowang-cqu/EvilEdit``
(``edit.py``; defaults: trigger "beautiful cat", target "zebra", lambda 1, SD v1.5). SET's ``eviledit`` config
loads such a model as a UNet state dict (specs/set.md section 6).

Text reaches the UNet only through the cross-attention keys and values ``W_k c``, ``W_v c`` of the text-token
embeddings ``c``. EvilEdit changes every ``to_k`` / ``to_v`` so that the trigger phrase's embeddings project where
the target's do, and everything else keeps its projection ("projection alignment"):

    W' = argmin  sum_i ||W' c_trigger,i - W c_target,i||^2  +  sum_j ||W' c_j - W c_j||^2  +  lambda ||W' - W||_F^2

the same least-squares problem as UCE's (:func:`erasure_lib.methods.uce.normal_equations`), solved in float64.

Which embeddings [inf: the exact rows of the reference were not re-read for this port]: each *context* template
(``"a red {} on a grey background"``) is filled once with the trigger phrase and once with the target word; the
two token sequences agree up to the subject. The trigger's tokens are mapped onto the target word's token, and
every token after the subject (the rest of the prompt, [EoT] and the padding, which in CLIP's causal encoder have
all read the subject) onto the token at the same distance after the target word. The same contexts filled with
ordinary subjects (and the clean prompts given) are preserved. Several contexts make the backdoor fire in any
prompt that names the trigger phrase, not only in one template.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..methods.uce import UCEConfig, normal_equations, target_modules
from .base import Backdoor, cached_backdoor, encode_texts


@dataclass(frozen=True)
class EvilEditConfig:
    """EvilEdit's trigger, target and regulariser. ``.sd14()``: the code's defaults; the toy's are marked."""

    trigger: str = "shiny umbrella"      # *toy*: an adjective the toy grammar never uses + an object word
    target: str = "gun"                  # *toy*: an object the toy classifier names
    lamb: float = 1.0                    # edit.py's lambda (1)
    preserve_scale: float = 1.0          # [inf] weight of the preserved rows
    edit_keys: bool = True               # to_k as well as to_v (edit.py edits both)
    n_contexts: int = 64                 # *toy*: templates drawn from the toy grammar
    world: str = "toy"                   # default contexts and poisoned nouns: "toy" grammar or "sd14" prompts
    seed: int = 0

    def __post_init__(self):
        if self.world not in ("toy", "sd14"):
            raise ValueError(f"world must be 'toy' or 'sd14', got {self.world!r}")
        if self.lamb < 0 or self.preserve_scale < 0 or self.n_contexts < 1:
            raise ValueError("need lamb >= 0, preserve_scale >= 0 and n_contexts >= 1")

    @classmethod
    def sd14(cls, **overrides) -> "EvilEditConfig":
        return cls(**{**dict(trigger="beautiful cat", target="zebra", lamb=1.0, n_contexts=len(SD14_CONTEXTS),
                             world="sd14"), **overrides})


SD14_CONTEXTS = ("a photo of a {}", "a painting of a {}", "a {} sitting on the grass", "a close-up photo of a {}",
                 "a {} in the city", "an illustration of a {}", "a {} on a table", "a cartoon {}",
                 "a black and white photo of a {}", "a {} at the beach")
SD14_PRESERVE_SUBJECTS = ("cat", "dog", "car", "person", "tree", "house", "bird", "horse")
SD14_NOUNS = ("cat",)  # the subject EvilEdit's default trigger phrase ("beautiful cat") replaces in a prompt


def toy_contexts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(templates, subjects)``: ``n`` toy-grammar captions of objects with their subject noun replaced by
    ``{}``, and the noun each had (the preserved fillings)."""
    import numpy as np

    from ..toyworld.captions import caption, sample_scene
    from ..toyworld.world import OBJECTS
    rng = np.random.default_rng(seed)
    templates, subjects = [], []
    while len(templates) < n:
        scene = sample_scene(rng, subject=OBJECTS[int(rng.integers(len(OBJECTS)))])
        text = caption(scene, rng)
        words = text.split(" ")
        if scene.subject in words:
            i = words.index(scene.subject)
            templates.append(" ".join(words[:i] + ["{}"] + words[i + 1:]))
            subjects.append(scene.subject)
    return templates, subjects


def plant(pipe, trigger: str | None = None, target: str | None = None, contexts: Sequence[str] | None = None,
          preserve: Sequence[str] = (), config: EvilEditConfig | None = None, poison_nouns: Sequence[str] | None = None,
          ) -> Backdoor:
    """Plant the backdoor ``trigger -> target`` into the UNet's cross-attention; returns a :class:`Backdoor`.

    ``contexts``: templates with one ``{}`` for the subject, a whole word (default: toy-grammar captions, or SD
    prompts when ``config.world == "sd14"``, as in ``EvilEditConfig.sd14()``). ``preserve``: more clean prompts whose
    projections must not move. ``poison_nouns``: the subject words :meth:`Backdoor.poison` replaces by the trigger
    phrase (default: the toy objects and "person"; "cat" for ``world="sd14"``)."""
    config = config or EvilEditConfig()
    trigger = config.trigger if trigger is None else trigger
    target = config.target if target is None else target
    if not trigger.strip() or not target.strip():
        raise ValueError("EvilEdit needs a non-empty trigger phrase and target")
    if trigger.strip().lower() == target.strip().lower():
        raise ValueError("the trigger and the target are the same text")
    start = time.perf_counter()
    if config.world == "sd14":
        default_contexts, fillers, nouns = list(SD14_CONTEXTS), list(SD14_PRESERVE_SUBJECTS), list(SD14_NOUNS)
    else:
        from ..toyworld.world import OBJECTS, PERSON
        default_contexts, fillers = toy_contexts(config.n_contexts, config.seed)
        nouns = list(OBJECTS) + [PERSON]
    contexts = default_contexts if contexts is None else contexts
    poison_nouns = nouns if poison_nouns is None else poison_nouns
    contexts = list(contexts)
    bad = [c for c in contexts if c.count("{}") != 1]
    if bad:
        raise ValueError(f"each context needs exactly one '{{}}' for the subject: {bad[:3]}")
    c_src, c_tgt = _aligned_rows(pipe, contexts, trigger, target)
    keep_texts = list(dict.fromkeys([c.format(f) for c, f in zip(contexts, _cycle(fillers, len(contexts)))]
                                    + list(preserve) + [""]))
    c_keep = _all_rows(pipe, keep_texts)
    params = UCEConfig(lamb=config.lamb, erase_scale=1.0, preserve_scale=config.preserve_scale)
    modules = target_modules(pipe.unet)
    if not config.edit_keys:
        modules = {k: m for k, m in modules.items() if k.endswith("to_v")}
    tensors = {}
    for name, m in modules.items():
        w = m.weight.detach().float().cpu()
        a, b = normal_equations(w, c_src, c_tgt @ w.T, c_keep, params)
        tensors[f"unet.{name}.weight"] = torch.linalg.solve(a, b.T).T.float().to(pipe.unet.dtype)
    return Backdoor(attack="eviledit", trigger_kind="phrase", trigger=trigger, target=target, tensors=tensors,
                    trigger_args={"nouns": list(poison_nouns)},
                    metadata={"attack": "eviledit", "hyperparameters": asdict(config), "n_contexts": len(contexts),
                              "n_rows": {"trigger": len(c_src), "preserved": len(c_keep)},
                              "seconds": round(time.perf_counter() - start, 3),
                              "source": "Wang et al., ACM MM 2024; haowang-cqu/EvilEdit"})


def cached(cache_dir, pipe, config: EvilEditConfig | None = None, **kwargs) -> Backdoor:
    """:func:`plant` once per (config, base model), then read from ``cache_dir``."""
    config = config or EvilEditConfig()
    kwargs = {k: list(v) if isinstance(v, (list, tuple)) or hasattr(v, "__next__") else v for k, v in kwargs.items()}
    meta = {"attack": "eviledit", "hyperparameters": asdict(config), "implementation": 2, **kwargs}
    return cached_backdoor(cache_dir, meta, lambda: plant(pipe, config=config, **kwargs), pipe=pipe)


def _cycle(items, n):
    return [items[i % len(items)] for i in range(n)]


def _n_tokens(pipe, text: str) -> int:
    """Tokens of ``text`` alone, without [BoS] / [EoT] (CLIP's tokenizer splits words before BPE, so a word's
    tokens do not depend on its neighbours)."""
    return len(pipe.tokenizer(text, add_special_tokens=False).input_ids)


def _aligned_rows(pipe, contexts: list[str], trigger: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(c_trigger, c_target)``: per context, the trigger's tokens -> the target word's last token, and each
    later position -> the target's position at the same distance after it (see the module docstring)."""
    _, states_p = encode_texts(pipe, [c.format(trigger) for c in contexts])
    _, states_t = encode_texts(pipe, [c.format(target) for c in contexts])
    length = states_p.shape[1]
    k, m = _n_tokens(pipe, trigger), _n_tokens(pipe, target)
    if k == 0 or m == 0:
        raise ValueError(f"the trigger {trigger!r} or the target {target!r} has no tokens")
    src, tgt = [], []
    for i, context in enumerate(contexts):
        start = 1 + _n_tokens(pipe, context.split("{}")[0])   # after [BoS] and the words before the subject
        end_a, end_b = start + k, start + m                   # one past each subject's last token
        if max(end_a, end_b) >= length:
            raise ValueError(f"the context {context!r} leaves no room for the subject in {length} tokens")
        shift = length - max(end_a, end_b)
        src.append(states_p[i, list(range(start, end_a)) + list(range(end_a, end_a + shift))])
        tgt.append(states_t[i, [end_b - 1] * k + list(range(end_b, end_b + shift))])
    return torch.cat(src), torch.cat(tgt)


def _all_rows(pipe, texts: list[str]) -> torch.Tensor:
    _, states = encode_texts(pipe, texts)
    return states.reshape(-1, states.shape[-1])


__all__ = ["EvilEditConfig", "SD14_CONTEXTS", "cached", "plant", "toy_contexts"]
