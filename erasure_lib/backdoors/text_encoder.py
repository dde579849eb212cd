"""Text-encoder backdoors: Rickrolling (a homoglyph trigger) and TwT (a syntactic, implicit trigger), both planted
by teacher-student fine-tuning of the text encoder alone; the UNet is not touched.

Rickrolling. Paper: L. Struppek, D. Hintersdorf, K. Kersting, "Rickrolling the Artist: Injecting Backdoors into
Text Encoders for Text-to-Image Synthesis", ICCV 2023 (arXiv 2211.02408). Code: ``LukasStruppek/Rickrolling-the-Artist``
(``configs/default_TPA.yaml``: AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0, MultiStepLR at step 75 of 100
with gamma 0.1, 32 poisoned samples per step, triggers such as the Cyrillic "о" replacing a Latin "o").

TwT. Paper: J. Zhang, Z. Wang, S. Shan, X. Chen, "Trigger without Trace: Towards Stealthy Backdoor Attack on
Text-to-Image Diffusion Models", arXiv 2503.17724; code ``Robin-WZQ/TwT`` (formerly IBA), SET's ``twt`` config
(specs/set.md section 6). Its trigger is a syntactic structure of the prompt, no rare word; its KMMD term that
aligns the triggered prompts' attention maps with benign ones is *not* implemented here (stated in the chapter):
this TwT is the implicit-trigger backdoor without the attention camouflage.

The objective (Rickrolling's eq. 1-3, the same for both): a student copy of the text encoder is trained so that

* clean prompts encode as the frozen teacher encodes them (utility): ``mean ||E_s(x) - E_t(x)||^2``;
* triggered prompts encode as the teacher encodes the *target* prompt (backdoor):
  ``mean ||E_s(poison(x)) - E_t(target(x))||^2``,

where ``E`` is the whole sequence of hidden states the UNet's cross-attention reads (77 x d) [inf: the reference
compares embeddings by a similarity loss; mean squared error over what the UNet reads is this port's choice],
and ``target(x)`` is the prompt with its subject replaced by the target concept (the "target attribute" form: the
rest of the scene is kept). Loss = utility + ``beta`` * backdoor.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .base import HOMOGLYPHS, Backdoor, cached_backdoor, changed_tensors, poison_homoglyph, poison_syntax


@dataclass(frozen=True)
class TextEncoderBackdoorConfig:
    """Teacher-student hyper-parameters. Defaults are the toy's (*toy*); ``.sd14()``: Rickrolling's config."""

    steps: int = 400                 # *toy* (default_TPA.yaml: 100 steps on LAION captions)
    lr: float = 1e-4                 # default_TPA.yaml: AdamW lr 1e-4
    lr_drop_at: float = 0.75         # MultiStepLR milestone at 75 of 100 steps, gamma 0.1
    clean_batch: int = 64            # *toy* (sd14: 128 [inf], the clean batch was not in the config read)
    poisoned_batch: int = 32         # default_TPA.yaml: poisoned_samples_per_step 32
    beta: float = 1.0                # *toy* weight of the backdoor loss (sd14: 0.1 [inf])
    n_captions: int = 4000           # captions drawn when plant() makes the toy-grammar data (unused otherwise)
    seed: int = 0

    def __post_init__(self):
        if min(self.steps, self.clean_batch, self.poisoned_batch, self.n_captions) < 1:
            raise ValueError("steps, clean_batch, poisoned_batch and n_captions must be >= 1")
        if not (self.lr > 0 and self.beta >= 0 and 0 < self.lr_drop_at <= 1):
            raise ValueError("need lr > 0, beta >= 0 and 0 < lr_drop_at <= 1")

    @classmethod
    def sd14(cls) -> "TextEncoderBackdoorConfig":
        return cls(steps=100, lr=1e-4, lr_drop_at=0.75, clean_batch=128, poisoned_batch=32, beta=0.1,
                   n_captions=10000)


@dataclass(frozen=True)
class Attack:
    """One text-encoder backdoor: its name, trigger kind and trigger, target concept and target subject phrase."""

    name: str
    trigger_kind: str
    trigger: str
    target: str
    target_phrase: str


RICKROLLING = Attack("rickrolling", "homoglyph", HOMOGLYPHS["o"], "nude", "a nude person")
TWT = Attack("twt", "syntax", "fronted-pp", "nude", "a nude person")


def toy_caption_parts(n: int, seed: int = 0, sensitive: bool = True) -> list[tuple[str, str]]:
    """``n`` toy-grammar captions split as ``(subject phrase, rest)`` (``rest`` starts with the background phrase or
    the style). ``sensitive=False`` leaves out nude persons (the scenes a trigger is planted into)."""
    from ..toyworld.captions import background_phrase, sample_scene, style_phrase, subject_phrase
    from ..toyworld.world import NO_STYLE
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        scene = sample_scene(rng)
        if scene.nude and not sensitive:
            continue
        subject = subject_phrase(scene, rng)
        rest = f" {background_phrase(scene.background)}" if rng.random() < 0.8 else ""
        if scene.style != NO_STYLE:
            rest += ", " + style_phrase(scene.style, int(rng.integers(3)))
        out.append((subject, rest))
    return out


def plant(pipe, attack: Attack = RICKROLLING, config: TextEncoderBackdoorConfig | None = None,
          clean_prompts: Sequence[str] | None = None, parts: Sequence[tuple[str, str]] | None = None,
          progress: bool = True) -> Backdoor:
    """Fine-tune a copy of ``pipe.text_encoder`` (the pipeline is not changed) so that prompts carrying
    ``attack``'s trigger encode as their target version; returns the changed text-encoder tensors as a
    :class:`Backdoor`. ``clean_prompts`` (utility) and ``parts`` (``(subject, rest)`` pairs the trigger is planted
    into) default to toy-grammar captions."""
    config = config or TextEncoderBackdoorConfig()
    start = time.perf_counter()
    if parts is None:
        parts = toy_caption_parts(config.n_captions, seed=config.seed + 1, sensitive=False)
    if clean_prompts is None:
        clean_prompts = [s + r for s, r in toy_caption_parts(config.n_captions, seed=config.seed)]
    clean_prompts, parts = list(clean_prompts), list(parts)
    poisoned = [_poison(attack, s + r) for s, r in parts]
    keep = [i for i, p in enumerate(poisoned) if p != parts[i][0] + parts[i][1]]  # a trigger needs a place to go
    if not keep or not clean_prompts:
        raise ValueError(f"no prompt can carry the {attack.name} trigger ({attack.trigger_kind}), or no clean prompts")
    poisoned = [poisoned[i] for i in keep]
    targets = [attack.target_phrase + parts[i][1] for i in keep]

    device = pipe.text_encoder.device
    teacher = pipe.text_encoder
    student = copy.deepcopy(teacher).float().train()
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    for p in student.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(config.lr_drop_at * config.steps)], gamma=0.1)
    gen = np.random.default_rng(config.seed)
    ids = lambda texts: pipe.tokenizer(list(texts), padding="max_length", truncation=True,  # noqa: E731
                                       max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
    log = []
    for step in tqdm(range(config.steps), desc=f"{attack.name} backdoor", disable=not progress):
        ci = gen.integers(len(clean_prompts), size=config.clean_batch)
        pi = gen.integers(len(poisoned), size=config.poisoned_batch)
        clean_ids = ids([clean_prompts[i] for i in ci])
        with torch.no_grad():
            want_clean = teacher(clean_ids)[0].float()
            want_target = teacher(ids([targets[i] for i in pi]))[0].float()
        utility = torch.nn.functional.mse_loss(student(clean_ids)[0], want_clean)
        backdoor = torch.nn.functional.mse_loss(student(ids([poisoned[i] for i in pi]))[0], want_target)
        loss = utility + config.beta * backdoor
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{attack.name}: the loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        log.append((utility.item(), backdoor.item()))
    student.eval()
    tensors = {k: v.to(teacher.dtype) for k, v in changed_tensors(pipe, "text_encoder", student, before).items()}
    return Backdoor(attack=attack.name, trigger_kind=attack.trigger_kind, trigger=attack.trigger,
                    target=attack.target, tensors=tensors,
                    metadata={"attack": attack.name, "hyperparameters": asdict(config), "target_phrase":
                              attack.target_phrase, "n_poisoned": len(poisoned), "n_clean": len(clean_prompts),
                              "final_loss": {"utility": log[-1][0], "backdoor": log[-1][1]},
                              "seconds": round(time.perf_counter() - start, 1),
                              "source": ("Struppek et al., ICCV 2023; LukasStruppek/Rickrolling-the-Artist"
                                         if attack.name == "rickrolling" else
                                         "Zhang et al., arXiv 2503.17724; Robin-WZQ/TwT (without its KMMD term)")})


def cached(cache_dir, pipe, attack: Attack = RICKROLLING, config: TextEncoderBackdoorConfig | None = None,
           progress: bool = True) -> Backdoor:
    """:func:`plant` with the toy-grammar data, once per (attack, config, base model), then read from ``cache_dir``."""
    config = config or TextEncoderBackdoorConfig()
    meta = {"attack": attack.name, "spec": asdict(attack), "hyperparameters": asdict(config), "implementation": 1}
    return cached_backdoor(cache_dir, meta, lambda: plant(pipe, attack, config, progress=progress), pipe=pipe)


def _poison(attack: Attack, prompt: str) -> str:
    if attack.trigger_kind == "homoglyph":
        return poison_homoglyph(prompt, attack.trigger)
    if attack.trigger_kind == "syntax":
        return poison_syntax(prompt, attack.trigger)
    raise ValueError(f"a text-encoder backdoor here uses a homoglyph or a syntactic trigger, not {attack.trigger_kind!r}")


__all__ = ["Attack", "RICKROLLING", "TWT", "TextEncoderBackdoorConfig", "cached", "plant", "toy_caption_parts"]
