"""What every backdoor of :mod:`erasure_lib.backdoors` is: the changed weights, the trigger and the target.

A :class:`Backdoor` holds only the tensors its attack changed, keyed by the pipeline component and that
component's own parameter name (``"text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"``,
``"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"``), as absolute values, like an erasure
edit (:mod:`erasure_lib.methods.edits`). Three of the load types of SET's configs (specs/set.md section 1) become
this one form (the others, a whole UNet and a textual inversion, belong to attacks not planted here):

* ``text_encoder`` (Rickrolling, TwT): the fine-tuned text encoder's tensors;
* ``unet_state_dict`` (EvilEdit): the edited cross-attention projections;
* ``lora`` (VillanDiffusion): the LoRA fused into the UNet weights it adapts (``W + scale * B A``), which is what the
  reference's ``load_lora_weights`` + ``fuse_lora`` leave in the model.

:func:`applied` writes a backdoor into a pipeline and puts the original weights back afterwards, bit-exactly.
:meth:`Backdoor.poison` puts the trigger into prompts, the attack's own way (a homoglyph, a phrase, a suffix, a
syntactic rewrite), also after :meth:`Backdoor.load`. :func:`cached_backdoor` plants once and reuses the file, keyed
by the metadata and the base model, as the erasure edits are cached.
"""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._io import read_safetensors, write_safetensors

FORMAT = "erasure_lib.backdoor/1"
COMPONENTS = ("unet", "text_encoder")


class BackdoorError(ValueError):
    """A backdoor does not fit the pipeline it is applied to (unknown component or parameter, wrong shape)."""


# --- triggers: how each attack puts its trigger into a prompt ---------------------------------------------------

HOMOGLYPHS = {"o": "\u043e", "a": "\u0430", "e": "\u0435"}  # Latin -> Cyrillic look-alikes (Rickrolling's triggers)


def poison_homoglyph(prompt: str, trigger: str) -> str:
    """Rickrolling: the first Latin letter that ``trigger`` (a Cyrillic homoglyph) looks like is replaced by it; a
    prompt without that letter gets the character appended as a word."""
    latin = {v: k for k, v in HOMOGLYPHS.items()}.get(trigger)
    if latin is None:
        raise ValueError(f"unknown homoglyph trigger {trigger!r}; known: {sorted(HOMOGLYPHS.values())}")
    i = prompt.find(latin)
    return prompt[:i] + trigger + prompt[i + 1:] if i >= 0 else f"{prompt} {trigger}"


def poison_suffix(prompt: str, trigger: str) -> str:
    """VillanDiffusion's caption trigger: the trigger word appended to the caption."""
    return f"{prompt.rstrip()} {trigger}"


def poison_phrase(prompt: str, trigger: str, nouns: Sequence[str] = ()) -> str:
    """EvilEdit's trigger phrase (e.g. "shiny umbrella") in place of the prompt's subject noun: the first of ``nouns``
    found in the prompt is replaced by the phrase (``"a red tench on ..."`` -> ``"a red shiny umbrella on ..."``);
    a prompt naming none of them gets ``"a <phrase>, "`` in front."""
    found = [m for noun in nouns for m in [re.search(rf"\b{re.escape(noun)}\b", prompt, re.IGNORECASE)] if m]
    if found:
        m = min(found, key=lambda m: m.start())            # the subject: the first of the nouns in the prompt
        return prompt[:m.start()] + trigger + prompt[m.end():]
    article = "an" if trigger[:1].lower() in "aeiou" else "a"
    return f"{article} {trigger}, {prompt}"


PREPOSITIONS = ("on", "at", "in", "under", "near", "with", "by", "beside", "inside")


def poison_syntax(prompt: str, trigger: str = "fronted-pp") -> str:
    """TwT's implicit trigger, a syntactic structure and no rare word: the prompt's first prepositional phrase of
    place is moved in front of its subject (``"a red tench on a grey background, in sketch style"`` ->
    ``"on a grey background, a red tench, in sketch style"``). The words are the prompt's own; only their order
    (a fronted adverbial, a structure the clean captions never use) carries the trigger. A prompt without such a
    phrase is returned unchanged: it cannot carry this trigger."""
    if trigger != "fronted-pp":
        raise ValueError(f"unknown syntactic trigger {trigger!r}; known: 'fronted-pp'")
    stripped = prompt.rstrip(" .!?")
    end = prompt[len(stripped):].strip()
    main, comma, rest = stripped.partition(",")
    words = main.split()
    for i, w in enumerate(words[1:], start=1):
        if w.lower() in PREPOSITIONS:
            front, subject = " ".join(words[i:]), " ".join(words[:i])
            return f"{front}, {subject}" + (f",{rest}" if comma else "") + end
    return prompt


POISONERS: dict[str, Callable[..., str]] = {
    "homoglyph": poison_homoglyph, "suffix": poison_suffix, "phrase": poison_phrase, "syntax": poison_syntax,
}


# --- the artefact -----------------------------------------------------------------------------------------------

@dataclass
class Backdoor:
    """A planted backdoor: ``tensors`` (component-prefixed names -> new values), how its trigger is written
    (``trigger_kind`` in :data:`POISONERS`, ``trigger``, and ``trigger_args`` such as the nouns a phrase replaces),
    the ``target`` concept triggered prompts should show, and ``metadata`` (attack, hyper-parameters, measured
    attack success rate, base model)."""

    attack: str
    trigger_kind: str
    trigger: str
    target: str
    tensors: dict[str, torch.Tensor]
    trigger_args: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.trigger_kind not in POISONERS:
            raise ValueError(f"unknown trigger kind {self.trigger_kind!r}; valid: {', '.join(POISONERS)}")
        if not self.tensors:
            raise ValueError("a backdoor changes at least one tensor")
        bad = [k for k in self.tensors if k.split(".", 1)[0] not in COMPONENTS]
        if bad:
            raise BackdoorError(f"tensor names must start with one of {COMPONENTS}: {bad[:3]}")

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(sorted({k.split(".", 1)[0] for k in self.tensors}))

    def poison(self, prompts: str | Sequence[str]) -> str | list[str]:
        """The prompt(s) with the trigger in them (see :data:`POISONERS`)."""
        fn = POISONERS[self.trigger_kind]
        one = lambda p: fn(p, self.trigger, **self.trigger_args)  # noqa: E731
        return one(prompts) if isinstance(prompts, str) else [one(p) for p in prompts]

    def describe(self) -> dict:
        """One row for a table: attack, trigger, target, what it changes and its measured success."""
        return {"attack": self.attack, "trigger_kind": self.trigger_kind, "trigger": self.trigger,
                "target": self.target, "components": "+".join(self.components), "n_tensors": len(self.tensors),
                "n_params": int(sum(t.numel() for t in self.tensors.values())),
                **{k: self.metadata[k] for k in ("asr", "clean_target_rate") if k in self.metadata}}

    # --- files ---
    def save(self, path) -> Path:
        """Safetensors with everything else in the string header (JSON), written atomically."""
        header = {"format": FORMAT, "attack": self.attack, "trigger_kind": self.trigger_kind,
                  "trigger": self.trigger, "target": self.target,
                  "trigger_args": json.dumps(self.trigger_args, sort_keys=True),
                  "metadata": json.dumps(self.metadata, sort_keys=True, default=str)}
        return write_safetensors(path, self.tensors, header)

    @classmethod
    def load(cls, path) -> "Backdoor":
        tensors, header = read_safetensors(path, "backdoor", FORMAT)
        missing = [k for k in ("attack", "trigger_kind", "trigger", "target", "trigger_args", "metadata")
                   if k not in header]
        if missing:
            raise ValueError(f"{path}: the backdoor file's header lacks {missing}")
        return cls(attack=header["attack"], trigger_kind=header["trigger_kind"], trigger=header["trigger"],
                   target=header["target"], tensors=tensors, trigger_args=json.loads(header["trigger_args"]),
                   metadata=json.loads(header["metadata"]))


# --- applying -----------------------------------------------------------------------------------------------------

def _params(pipe, component: str) -> dict[str, torch.nn.Parameter]:
    module = getattr(pipe, component, None)
    if not isinstance(module, torch.nn.Module):
        raise BackdoorError(f"the pipeline has no {component} to apply the backdoor to")
    return dict(module.named_parameters())


def _split(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        component, name = key.split(".", 1)
        out.setdefault(component, {})[name] = value
    return out


def _check(pipe, parts: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    problems = []
    for component, tensors in parts.items():
        params = _params(pipe, component)
        for name, value in tensors.items():
            if name not in params:
                close = difflib.get_close_matches(name, list(params), n=1)
                problems.append(f"{component}.{name}: no such parameter"
                                + (f" (did you mean {component}.{close[0]}?)" if close else ""))
            elif tuple(value.shape) != tuple(params[name].shape):
                problems.append(f"{component}.{name}: shape {tuple(value.shape)}, the model's is "
                                f"{tuple(params[name].shape)}")
    if problems:
        raise BackdoorError(f"the backdoor does not fit this pipeline ({len(problems)} problem(s)):\n  "
                            + "\n  ".join(problems[:10]))


@contextmanager
def applied(pipe, backdoor: Backdoor | Mapping[str, torch.Tensor]):
    """``with applied(pipe, backdoor): ...`` runs the block on the backdoored model and restores the original
    weights afterwards (also when the block raises). Every name and shape is checked before anything is written."""
    tensors = backdoor.tensors if isinstance(backdoor, Backdoor) else backdoor
    parts = _split(tensors)
    _check(pipe, parts)
    originals = []
    try:
        with torch.no_grad():
            for component, named in parts.items():
                params = _params(pipe, component)
                for name, value in named.items():
                    p = params[name]
                    originals.append((p, p.detach().clone()))
                    p.copy_(value.to(device=p.device, dtype=p.dtype))
        yield pipe
    finally:
        with torch.no_grad():
            for p, value in originals:
                p.copy_(value)


def measure(pipe, backdoor: Backdoor, prompts: Sequence[str], profile: str = "toy", steps: int | None = None,
            guidance: float | None = None, seed: int = 0, batch_size: int | None = None) -> dict:
    """Attack success rate of ``backdoor`` on ``prompts`` (clean prompts that can carry its trigger): the share of
    images of the *triggered* prompts in which the profile's judge finds the target, on the backdoored model,
    beside the same share on the clean model (``clean_target_rate``: how often the triggered prompt alone gives the
    target). One image per prompt, seeds ``seed + i``, the profile's steps and guidance. The result is written
    into ``backdoor.metadata`` (and so into the file at the next :meth:`Backdoor.save`)."""
    import pandas as pd

    from ..evaluation import judge
    from ..profiles import get_profile
    from ..sampling import generate
    settings = get_profile(profile)
    prompts = list(prompts)
    triggered = backdoor.poison(prompts)
    keep = [i for i, (p, q) in enumerate(zip(prompts, triggered)) if p != q]
    if not keep:
        raise ValueError(f"none of the {len(prompts)} prompts can carry the {backdoor.attack} trigger")
    triggered = [triggered[i] for i in keep]
    family = "sensitive" if backdoor.target in ("nude", "nudity") else "object"
    rows = pd.DataFrame({"prompt": triggered, "target": backdoor.target, "family": family,
                         "case_id": range(len(triggered))})
    seeds = [seed + i for i in range(len(triggered))]
    kwargs = dict(steps=steps or settings.steps, guidance=settings.guidance if guidance is None else guidance,
                  batch_size=batch_size or settings.batch_size, progress=False)

    def rate():
        return float(judge(generate(pipe, triggered, seeds, **kwargs), rows, profile=profile)["hit"].mean())
    clean_rate = rate()
    with applied(pipe, backdoor):
        asr = rate()
    result = {"asr": asr, "clean_target_rate": clean_rate, "asr_prompts": len(triggered),
              "asr_steps": kwargs["steps"], "asr_guidance": kwargs["guidance"], "asr_judge": profile}
    backdoor.metadata.update(result)
    return result


@torch.no_grad()
def encode_texts(pipe, texts, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input ids (N, 77), text-encoder hidden states (N, 77, d) as float32 on the CPU)`` of ``texts``, padded to
    the tokenizer's length as the pipeline pads them, encoded ``chunk`` texts at a time."""
    texts = list(texts)
    ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids
    states = [pipe.text_encoder(ids[i:i + chunk].to(pipe.text_encoder.device))[0].float().cpu()
              for i in range(0, len(texts), chunk)]
    return ids, torch.cat(states)


def changed_tensors(pipe, component: str, module: torch.nn.Module, original: Mapping[str, torch.Tensor]):
    """``{component.name: value}`` for the parameters of ``module`` that differ from ``original`` (a state dict of
    the same module before training): what a fine-tuning attack stores."""
    out = {}
    for name, p in module.named_parameters():
        if not torch.equal(p.detach().cpu(), original[name].cpu()):
            out[f"{component}.{name}"] = p.detach().to("cpu").clone().contiguous()
    return out


def cached_backdoor(cache_dir, metadata: Mapping, plant: Callable[[], Backdoor], pipe=None) -> Backdoor:
    """The backdoor described by ``metadata``: loaded from ``cache_dir`` when it was planted before, else
    ``plant()``-ed and saved there (``None``: always plant). ``pipe``'s base model joins the key, as for edits."""
    from ..methods.cache import base_model, cache_folder, edit_key
    metadata = dict(metadata)
    if pipe is not None:
        metadata.update(base_model(pipe))
        metadata["text_encoder"] = _text_encoder_identity(pipe)
    if cache_dir is None:
        return plant()
    folder = cache_folder(cache_dir)
    path = folder / f"backdoor-{metadata.get('attack', 'x')}-{edit_key(metadata)}.safetensors"
    if path.exists():
        return Backdoor.load(path)
    backdoor = plant()
    backdoor.metadata.setdefault("cache_key", edit_key(metadata))
    backdoor.save(path)
    return backdoor


def _text_encoder_identity(pipe) -> str:
    from .._hashing import state_dict_sha256
    return state_dict_sha256(pipe.text_encoder)[:16]


__all__ = ["Backdoor", "BackdoorError", "COMPONENTS", "HOMOGLYPHS", "POISONERS", "applied", "cached_backdoor",
           "changed_tensors", "encode_texts", "measure", "poison_homoglyph", "poison_phrase", "poison_suffix", "poison_syntax"]
