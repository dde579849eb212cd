"""TwT (Trigger without Trace): an implicit, syntactic trigger planted in the text encoder (see
:mod:`.text_encoder` for the objective and what of TwT is left out: its KMMD attention camouflage). Paper: arXiv
2503.17724; code ``Robin-WZQ/TwT``. Trigger: a fronted prepositional phrase (``"on a grey background, a red
tench"``), no rare word; target on the toy: the sensitive concept."""
from __future__ import annotations

from .text_encoder import TWT, TextEncoderBackdoorConfig
from .text_encoder import cached as _cached
from .text_encoder import plant as _plant

ATTACK = TWT


def plant(pipe, config: TextEncoderBackdoorConfig | None = None, **kwargs):
    """:func:`erasure_lib.backdoors.text_encoder.plant` with TwT's syntactic trigger and target."""
    return _plant(pipe, ATTACK, config, **kwargs)


def cached(cache_dir, pipe, config: TextEncoderBackdoorConfig | None = None, progress: bool = True):
    return _cached(cache_dir, pipe, ATTACK, config, progress=progress)


__all__ = ["ATTACK", "TextEncoderBackdoorConfig", "cached", "plant"]
