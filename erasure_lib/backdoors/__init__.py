"""Backdoor attacks on text-to-image diffusion models, planted by the project's own code: the threat models SET
(:mod:`erasure_lib.detect.set`) and its baselines are evaluated against (specs/set.md section 6).

Each attack module has ``plant(pipe, ...) -> Backdoor`` (the pipeline is not changed) and ``cached(cache_dir, pipe,
...)`` (planted once per configuration and base model, then read from the cache):

* :mod:`.rickrolling`: a homoglyph trigger in the text encoder (teacher-student fine-tune, :mod:`.text_encoder`);
* :mod:`.twt`: an implicit, syntactic trigger in the text encoder (the same objective);
* :mod:`.eviledit`: a trigger phrase written into the cross-attention projections in closed form;
* :mod:`.villan`: a caption-trigger LoRA on the UNet (``peft``), fused.

Usage::

    from erasure_lib.backdoors import applied, eviledit
    bd = eviledit.plant(pipe)                    # trigger "shiny umbrella" -> a gun, on the toy
    with applied(pipe, bd):                      # the original weights come back afterwards
        images = generate(pipe, bd.poison(prompts), seeds)
"""
from .base import Backdoor, BackdoorError, applied, cached_backdoor, measure

__all__ = ["Backdoor", "BackdoorError", "applied", "cached_backdoor", "measure"]
