"""Rickrolling the Artist: a homoglyph trigger planted in the text encoder (see :mod:`.text_encoder` for the
objective). Paper: L. Struppek, D. Hintersdorf, K. Kersting, ICCV 2023 (arXiv 2211.02408); code
``LukasStruppek/Rickrolling-the-Artist``. Trigger: the Cyrillic "о" (U+043E) in place of the first Latin "o";
target on the toy: the sensitive concept (the prompt's subject becomes "a nude person")."""
from __future__ import annotations

from .text_encoder import RICKROLLING, TextEncoderBackdoorConfig
from .text_encoder import cached as _cached
from .text_encoder import plant as _plant

ATTACK = RICKROLLING


def plant(pipe, config: TextEncoderBackdoorConfig | None = None, **kwargs):
    """:func:`erasure_lib.backdoors.text_encoder.plant` with Rickrolling's trigger and target."""
    return _plant(pipe, ATTACK, config, **kwargs)


def cached(cache_dir, pipe, config: TextEncoderBackdoorConfig | None = None, progress: bool = True):
    return _cached(cache_dir, pipe, ATTACK, config, progress=progress)


__all__ = ["ATTACK", "TextEncoderBackdoorConfig", "cached", "plant"]
