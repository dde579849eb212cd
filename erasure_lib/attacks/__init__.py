"""Adversarial-prompt attacks on erased text-to-image models (``specs/attacks.md``).

* :mod:`.base`: the result record (:class:`~.base.AttackResult`), the text encoder on swapped token embeddings, the
  vocabulary filters;
* :mod:`.unlearndiffatk`, :mod:`.p4d`: white-box prompt optimisation through the erased UNet;
* :mod:`.ring_a_bell`, :mod:`.mma`: model-agnostic searches on the text encoder alone.

Each module has one public ``attack(...)`` and a config dataclass with the paper's / code's values in ``.sd14()``.
"""
from . import mma, ring_a_bell
from .base import AttackResult, load_results, save_results

__all__ = ["AttackResult", "load_results", "mma", "ring_a_bell", "save_results"]
